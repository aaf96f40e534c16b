//! Test support for driving `p2pcore` processes: each child's stdout lines
//! are kept with the instant they arrived (a reader thread), its stderr
//! likewise, and the child is killed and reaped when the test ends, even
//! failing.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `p2pcore` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_p2pcore");

/// Lines a stream produced, with when.
type Log = Arc<Mutex<Vec<(Instant, String)>>>;

fn collect(stream: impl Read + Send + 'static) -> Log {
    let log: Log = Arc::default();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = sink.lock() {
                l.push((Instant::now(), line));
            }
        }
    });
    log
}

/// A running `p2pcore` (or any) child process.
pub struct Proc {
    child: Child,
    pub name: String,
    stdin: Option<ChildStdin>,
    stdout: Log,
    stderr: Log,
    /// Where [`Proc::expect`] continues.
    cursor: usize,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `cmd` with piped stdin, stdout and stderr.
    pub fn start(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        let stdin = child.stdin.take();
        Self { child, name: name.to_owned(), stdin, stdout, stderr, cursor: 0 }
    }

    /// Starts the `p2pcore` binary with `args`.
    pub fn p2pcore(name: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Self::start(name, cmd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes a line to its stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("{}: stdin closed", self.name));
        writeln!(stdin, "{line}").unwrap_or_else(|e| panic!("{}: write stdin: {e}", self.name));
    }

    /// Closes its stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Every stdout line so far.
    pub fn lines(&self) -> Vec<(Instant, String)> {
        self.stdout.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Every stderr line so far, joined.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .map(|l| l.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Waits (at most `limit`) for a stdout line after the cursor that
    /// contains `needle`; moves the cursor past it; returns the lines read.
    pub fn expect(&mut self, needle: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let lines = self.lines();
            if let Some(i) =
                lines[self.cursor.min(lines.len())..].iter().position(|(_, l)| l.contains(needle))
            {
                let end = self.cursor + i + 1;
                let read = lines[self.cursor..end].iter().map(|(_, l)| l.clone()).collect();
                self.cursor = end;
                return read;
            }
            if Instant::now() >= deadline {
                let all: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
                panic!(
                    "{} never printed `{needle}`; it printed:\n{}\nstderr:\n{}",
                    self.name,
                    all.join("\n"),
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`TERM`, `KILL`, ...).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig} {}", self.name);
    }

    /// Waits for the exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {limit:?}", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
