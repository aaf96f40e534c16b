//! The C ABI from C, C++ and Python, as engines use it: the examples and a
//! C++ program are compiled against the checked-in header with warnings as
//! errors (`-std=c99 -pedantic`, `-std=c++17 -pedantic`), linked against the
//! `cdylib` (and once the `staticlib`), and run over loopback; `chat.c` also
//! under AddressSanitizer, as are `kv.c` (the store: every entry list
//! freed) and `coord.c` (sessions, locks, elections, queues, the registry);
//! a Python `ctypes` script loads the shared
//! library the way Unity's P/Invoke does. Needs `cc`, `c++` and `python3`
//! (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where cargo put the library this test was built with:
/// `target/<profile>/deps`, beside the test itself. (`cargo test` builds the
/// cdylib and staticlib there but copies them up to `target/<profile>`
/// only on `cargo build`, so that copy may be missing or stale.)
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().to_path_buf()
}

fn ffi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_abi");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: could not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Compiles `sources` into `name`, linked against the shared library (or
/// the static one), with `extra` flags.
fn build(
    compiler: &str,
    std: &str,
    sources: &[&str],
    name: &str,
    static_lib: bool,
    extra: &[&str],
) -> PathBuf {
    let lib = lib_dir();
    let exe = out_dir().join(name);
    let mut cmd = Command::new(compiler);
    cmd.args([std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
        .arg("-I")
        .arg(ffi_dir().join("include"))
        .args(sources.iter().map(|s| ffi_dir().join(s)))
        .args(extra)
        .arg("-o")
        .arg(&exe);
    if static_lib {
        // The staticlib needs the system libraries Rust's std uses.
        cmd.arg(lib.join("libp2pcore_ffi.a")).args(["-lpthread", "-ldl", "-lm"]);
    } else {
        cmd.arg("-L").arg(&lib).arg("-lp2pcore_ffi").arg(format!("-Wl,-rpath,{}", lib.display()));
    }
    run(&mut cmd, &format!("compiling {name}"));
    exe
}

/// Runs a program with a time limit (coreutils `timeout`), so a hang fails
/// the test instead of stalling it.
fn exec(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("timeout");
    // `cargo test` puts `target/<profile>` on LD_LIBRARY_PATH, which the
    // loader searches before the program's RUNPATH: a library that an
    // earlier `cargo build` left there would be loaded instead of this
    // build's (the examples would test stale code). This build's first.
    let mut path = std::ffi::OsString::from(lib_dir());
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        path.push(":");
        path.push(old);
    }
    cmd.arg("120").arg(exe).args(args).env("LD_LIBRARY_PATH", path).envs(env.iter().copied());
    run(&mut cmd, &exe.display().to_string())
}

#[test]
fn chat_in_c_frame_loop_and_thread_mode() {
    let exe = build("cc", "-std=c99", &["examples/chat.c"], "chat", false, &[]);
    let out = exec(&exe, &[], &[]);
    assert!(out.contains("alice: from") && out.contains("bob: from") && out.contains("chat: done"), "{out}");
    assert!(out.contains("the Master is server (basis 1"), "{out}");
    let out = exec(&exe, &["thread"], &[]);
    assert!(out.contains("chat: done"), "{out}");
    // Lookup mode: no directory, each peer finds the other by name.
    let out = exec(&exe, &["lookup"], &[]);
    assert!(out.contains("alice: found bob") && out.contains("bob: found alice"), "{out}");
    assert!(out.contains("chat: done"), "{out}");
}

#[test]
fn chat_under_address_sanitizer() {
    let exe = build(
        "cc",
        "-std=c99",
        &["examples/chat.c"],
        "chat_asan",
        false,
        &["-fsanitize=address", "-fno-omit-frame-pointer"],
    );
    // Leak detection on: every message and node the example took must have
    // been released (Rust's allocations go through the intercepted malloc).
    let env = [("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")];
    let out = exec(&exe, &["thread"], &env);
    assert!(out.contains("chat: done"), "{out}");
    let out = exec(&exe, &[], &env);
    assert!(out.contains("chat: done"), "{out}");
}

#[test]
fn the_store_from_c_put_get_cas_watch_and_every_list_freed() {
    let exe = build("cc", "-std=c99", &["examples/kv.c"], "kv", false, &[]);
    let out = exec(&exe, &[], &[]);
    assert!(out.contains("a server asking the store: only a peer can make store requests"), "{out}");
    assert!(out.contains("bob: get room/topic = maps (version 1)"), "{out}");
    assert!(out.contains("alice: watch 0: put room/bob = here"), "{out}");
    assert!(out.contains("the lock is held by") && out.contains("took the lock over"), "{out}");
    assert!(out.contains("bob: deleted 2 key(s) under room/") && out.contains("kv: done"), "{out}");
    // Leak detection: every p2p_kv_list the events handed over was freed.
    let exe = build(
        "cc",
        "-std=c99",
        &["examples/kv.c"],
        "kv_asan",
        false,
        &["-fsanitize=address", "-fno-omit-frame-pointer"],
    );
    let env = [("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")];
    let out = exec(&exe, &[], &env);
    assert!(out.contains("kv: done"), "{out}");
}

#[test]
fn coordination_from_c_lock_election_queue_registry_and_every_list_freed() {
    let exe = build("cc", "-std=c99", &["examples/coord.c"], "coord", false, &[]);
    let out = exec(&exe, &[], &[]);
    assert!(out.contains("a lock without a session: this request needs a session"), "{out}");
    assert!(out.contains("alice: holds the lock, fencing token"), "{out}");
    assert!(out.contains("bob: try-lock: the deadline passed"), "{out}");
    assert!(
        out.contains("alice: elected, term") && out.contains("bob: the leader is alice at alice:7777"),
        "{out}"
    );
    assert!(
        out.contains("alice: popped ben (priority 5") && out.contains("alice: popped ann (priority 1"),
        "{out}"
    );
    assert!(
        out.contains("bob: found eu-1 at 127.0.0.1:7777, load 3 of 4, tags mode=ranked,region=eu"),
        "{out}"
    );
    assert!(out.contains("alice: released the lock") && out.contains("bob: nobody leads host"), "{out}");
    assert!(out.contains("coord: done"), "{out}");
    // Leak detection: every p2p_kv_list the coordination events handed
    // over (leaders, popped items, instances) was freed.
    let exe = build(
        "cc",
        "-std=c99",
        &["examples/coord.c"],
        "coord_asan",
        false,
        &["-fsanitize=address", "-fno-omit-frame-pointer"],
    );
    let env = [("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")];
    let out = exec(&exe, &[], &env);
    assert!(out.contains("coord: done"), "{out}");
}

#[test]
fn raw_core_mode_with_the_examples_own_socket_linked_statically() {
    let exe = build("cc", "-std=c99", &["examples/raw_loop.c"], "raw_loop", true, &[]);
    let out = exec(&exe, &[], &[]);
    assert!(out.contains("raw_loop: 100 messages echoed in order"), "{out}");
}

#[test]
fn header_compiles_and_works_as_cpp17() {
    let exe = build("c++", "-std=c++17", &["tests/header.cpp"], "header_cpp", false, &[]);
    let out = exec(&exe, &[], &[]);
    assert!(out.contains("parsed back"), "{out}");
}

#[test]
fn python_ctypes_loads_the_shared_library_like_pinvoke() {
    let lib =
        lib_dir().join(if cfg!(target_os = "macos") { "libp2pcore_ffi.dylib" } else { "libp2pcore_ffi.so" });
    let mut cmd = Command::new("timeout");
    cmd.arg("120").arg("python3").arg(ffi_dir().join("tests/ctypes_chat.py")).arg(&lib);
    let out = run(&mut cmd, "ctypes_chat.py");
    assert!(out.contains("ann and ben exchanged 6 messages"), "{out}");
}
