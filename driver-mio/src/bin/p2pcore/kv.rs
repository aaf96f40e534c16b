//! The console's `kv` commands: the cluster's replicated store from the
//! `p2pcore peer` prompt. A request waits for its answer (so a script's
//! `kv put` is applied before its next line runs); watches print their
//! changes as they come, from the event printer's thread.
//!
//! The answer of a request arrives on the event printer's thread as
//! `Event::KvDone` and is handed over through [`KvWaits`].

use crate::waits::Waits;
use p2pcore::{KvAnswer, KvEntry, KvError, KvEvent, KvEventKind, KvOptions, KvRequest, KvResponse};
use p2pcore_mio::Handle;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `help` lines of the store commands.
pub(crate) const HELP: &str = "  kv get KEY               read a key: its value, version and revisions
  kv get-prefix PREFIX [N] read the keys under PREFIX (\"\" for all), at most N
  kv put KEY VALUE         write VALUE (the rest of the line) under KEY
  kv del KEY               delete a key
  kv del-prefix PREFIX     delete every key under PREFIX
  kv watch PREFIX [FROM]   print changes under PREFIX (\"\" for all) as they happen,
                           from now on or from revision FROM
  kv unwatch ID            stop a watch
  (values print as text when they are UTF-8, as 0x... hex otherwise)";

/// How long past a request's own timeout the console waits for its answer
/// before it says the node did not answer (the core always answers).
const SLACK: Duration = Duration::from_secs(2);

/// Store answers the console waits for, by request id.
pub(crate) type KvWaits = Waits<Result<KvAnswer, KvError>>;

/// The printer thread's line for a store event nobody waits for: a watch's
/// changes, a watch's end, or an answer that came after its wait.
pub(crate) fn watch_lines(id: u64, events: &[KvEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.kind {
            KvEventKind::Delete => {
                format!("~ watch {id}: delete {} (revision {})", show(&e.entry.key), e.entry.mod_revision)
            }
            KvEventKind::Expired => format!(
                "~ watch {id}: expired {} (its session ended; revision {})",
                show(&e.entry.key),
                e.entry.mod_revision
            ),
            _ => format!(
                "~ watch {id}: put {} = {} (revision {}, version {})",
                show(&e.entry.key),
                show(&e.entry.value),
                e.entry.mod_revision,
                e.entry.version
            ),
        })
        .collect()
}

/// What went wrong with a store request and how to fix it, on one line.
pub(crate) fn error_line(what: &str, e: &KvError) -> String {
    let hint = match e {
        KvError::Unavailable => {
            "; a majority of the servers must be up and reachable (see `servers`), then try again"
        }
        KvError::TooLarge { .. } => "; keys are 1 to 1024 bytes, values at most 32768",
        KvError::Invalid(_) => " (see `help`)",
        KvError::Stale => "; make the request again",
        KvError::NotAPeer => "; the store is used from peers",
        // The others say what to do in their own text.
        _ => "",
    };
    format!("{what}: {e}{hint}")
}

/// Bytes as text when they are UTF-8 without control characters, `""`
/// when empty, `0x` and hex otherwise (one line either way).
pub(crate) fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok("") => "\"\"".into(),
        Ok(s) if !s.chars().any(char::is_control) => s.into(),
        _ => {
            let mut out = String::with_capacity(2 + 2 * bytes.len());
            out.push_str("0x");
            for b in bytes {
                out.push_str(&format!("{b:02x}"));
            }
            out
        }
    }
}

/// A key or prefix as typed, for a message: long ones cut.
fn typed(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((cut, _)) => format!("{}... ({} bytes)", &s[..cut], s.len()),
        None => s.to_owned(),
    }
}

/// A key or prefix as typed: `""` is the empty one.
fn word(s: &str) -> Vec<u8> {
    if s == "\"\"" { Vec::new() } else { s.as_bytes().to_vec() }
}

/// Runs `kv SUBCOMMAND ...`; the line to print as an error otherwise.
pub(crate) fn command(handle: &Handle, waits: &Arc<KvWaits>, rest: &str) -> Result<(), String> {
    let (sub, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = args.trim();
    let mut words = args.split_whitespace();
    let (one, two, three) = (words.next(), words.next(), words.next());
    match (sub, one, two, three) {
        ("get", Some(key), None, _) => get(handle, waits, key),
        ("get", ..) => Err("usage: kv get KEY".into()),
        ("get-prefix", Some(prefix), limit, None) => {
            let limit = match limit {
                Some(n) => n.parse().map_err(|_| format!("LIMIT `{n}` is not a count (0 to 4294967295)"))?,
                None => 0,
            };
            get_prefix(handle, waits, prefix, limit)
        }
        ("get-prefix", ..) => Err("usage: kv get-prefix PREFIX [LIMIT] (PREFIX \"\" reads every key)".into()),
        ("put", Some(key), Some(_), _) => {
            // The value is the rest of the line, spaces included.
            let value = args[key.len()..].trim();
            let what = format!("kv put {}", typed(key));
            let answer = ask(handle, waits, KvRequest::put(word(key), value), &what)?;
            println!("put {key} at revision {}", answer.revision);
            Ok(())
        }
        ("put", ..) => Err("usage: kv put KEY VALUE".into()),
        ("del", Some(key), None, _) => {
            let answer = ask(handle, waits, KvRequest::delete(word(key)), &format!("kv del {}", typed(key)))?;
            match answer.response {
                KvResponse::Delete { deleted: 0 } => {
                    println!("{key}: no such key, nothing deleted (at revision {})", answer.revision)
                }
                _ => println!("deleted {key} at revision {}", answer.revision),
            }
            Ok(())
        }
        ("del", ..) => Err("usage: kv del KEY".into()),
        ("del-prefix", Some(prefix), None, _) => {
            let what = format!("kv del-prefix {}", typed(prefix));
            let answer = ask(handle, waits, KvRequest::delete_prefix(word(prefix)), &what)?;
            let deleted = match answer.response {
                KvResponse::Delete { deleted } => deleted,
                _ => 0,
            };
            println!("deleted {deleted} key(s) under {prefix} at revision {}", answer.revision);
            Ok(())
        }
        ("del-prefix", ..) => Err("usage: kv del-prefix PREFIX (PREFIX \"\" deletes every key)".into()),
        ("watch", Some(prefix), from, None) => watch(handle, waits, prefix, from),
        ("watch", ..) => Err("usage: kv watch PREFIX [FROM] (PREFIX \"\" watches every key)".into()),
        ("unwatch", Some(id), None, _) => {
            let id: u64 = id.parse().map_err(|_| format!("`{id}` is not a watch ID (a number)"))?;
            let found =
                handle.with(move |h| h.node_mut().unwatch(Instant::now(), id)).map_err(|e| e.to_string())?;
            if !found {
                return Err(format!("no live watch has ID {id} (`kv watch` prints the IDs)"));
            }
            println!("stopped watch {id}");
            Ok(())
        }
        ("unwatch", ..) => Err("usage: kv unwatch ID".into()),
        ("", ..) => Err("usage: kv get|get-prefix|put|del|del-prefix|watch|unwatch ... (see `help`)".into()),
        (other, ..) => Err(format!(
            "unknown store command `kv {other}`: use get, get-prefix, put, del, del-prefix, watch or unwatch"
        )),
    }
}

/// Sends `req`, waits for its answer; `what` names it in an error.
fn ask(handle: &Handle, waits: &Arc<KvWaits>, req: KvRequest, what: &str) -> Result<KvAnswer, String> {
    let opts = KvOptions::default();
    let register = waits.clone();
    let id = handle
        .with(move |h| {
            let id = h.node_mut().kv_with(Instant::now(), req, opts)?;
            register.expect(id);
            Ok::<u64, KvError>(id)
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| error_line(what, &e))?;
    match waits.wait(id, opts.timeout + SLACK) {
        Some(Ok(answer)) => Ok(answer),
        Some(Err(e)) => Err(error_line(what, &e)),
        None => Err(format!(
            "{what}: no answer from the node within {} s (it should always answer: please report this)",
            (opts.timeout + SLACK).as_secs()
        )),
    }
}

fn entry_line(e: &KvEntry) -> String {
    format!(
        "{} = {}  (version {}, created at revision {}, modified at {})",
        show(&e.key),
        show(&e.value),
        e.version,
        e.create_revision,
        e.mod_revision
    )
}

fn get(handle: &Handle, waits: &Arc<KvWaits>, key: &str) -> Result<(), String> {
    let answer = ask(handle, waits, KvRequest::get(word(key)), &format!("kv get {}", typed(key)))?;
    match answer.response {
        KvResponse::Get { entries, .. } if !entries.is_empty() => {
            for e in &entries {
                println!("{}; read at revision {}", entry_line(e), answer.revision);
            }
        }
        _ => println!("{key}: no such key (at revision {})", answer.revision),
    }
    Ok(())
}

fn get_prefix(handle: &Handle, waits: &Arc<KvWaits>, prefix: &str, limit: u32) -> Result<(), String> {
    let req = KvRequest::get_prefix(word(prefix)).limit(limit);
    let answer = ask(handle, waits, req, &format!("kv get-prefix {}", typed(prefix)))?;
    let KvResponse::Get { entries, more } = answer.response else {
        return Err(format!("kv get-prefix {prefix}: the store answered something else than a read"));
    };
    for e in &entries {
        println!("{}", entry_line(e));
    }
    let more = if more { "; more keys match (raise the limit)" } else { "" };
    println!("{} key(s) under {prefix} at revision {}{more}", entries.len(), answer.revision);
    Ok(())
}

/// `kv watch PREFIX [FROM]`: without FROM, from just after the store's
/// revision now (a read finds it), so every change after the command is
/// printed, whichever server serves the watch.
fn watch(handle: &Handle, waits: &Arc<KvWaits>, prefix: &str, from: Option<&str>) -> Result<(), String> {
    let what = format!("kv watch {}", typed(prefix));
    let from = match from {
        Some(f) => f.parse::<u64>().map_err(|_| format!("FROM `{f}` is not a revision (a number)"))?,
        None => ask(handle, waits, KvRequest::get_prefix(word(prefix)).limit(1), &what)?.revision + 1,
    };
    let key = word(prefix);
    let id = handle
        .with(move |h| h.node_mut().watch(Instant::now(), key, from))
        .map_err(|e| e.to_string())?
        .map_err(|e| error_line(&what, &e))?;
    println!("watch {id}: changes under {prefix} from revision {from} (`kv unwatch {id}` stops it)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_show_as_text_when_they_can_and_hex_otherwise() {
        assert_eq!(show(b"hello world"), "hello world");
        assert_eq!(show("héllo".as_bytes()), "héllo");
        assert_eq!(show(b""), "\"\"");
        assert_eq!(show(&[0xff, 0x00, 0x41]), "0xff0041");
        assert_eq!(show(b"two\nlines"), "0x74776f0a6c696e6573", "one line always");
        assert_eq!(word("\"\""), b"");
        assert_eq!(word("a/b"), b"a/b");
        assert_eq!(typed(&"k".repeat(1025)), format!("{}... (1025 bytes)", "k".repeat(40)));
    }

    #[test]
    fn errors_say_how_to_fix_them() {
        let line = error_line("kv get k", &KvError::Unavailable);
        assert!(line.starts_with("kv get k: the cluster's store did not answer in time"), "{line}");
        assert!(line.contains("majority of the servers"), "{line}");
        let line = error_line("kv put k", &KvError::TooLarge { what: "value", len: 40_000, max: 32_768 });
        assert!(line.contains("value is 40000 bytes") && line.contains("at most 32768"), "{line}");
    }
}
