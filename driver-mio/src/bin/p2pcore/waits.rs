//! Answers a console command waits for, by request id. The answer arrives
//! on the event printer's thread (`Event::KvDone`, `Event::LookupDone`);
//! the command registers the id with [`Waits::expect`] on the network
//! thread, in the same call that makes the request, so the printer always
//! knows the answer is awaited (it is queued only after that call returns).

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Answers awaited by request id: `None` until the printer puts one in.
pub(crate) struct Waits<T> {
    answers: Mutex<BTreeMap<u64, Option<T>>>,
    ready: Condvar,
}

impl<T> Default for Waits<T> {
    fn default() -> Self {
        Self { answers: Mutex::default(), ready: Condvar::new() }
    }
}

impl<T: Clone> Waits<T> {
    /// The asking side: request `id`'s answer will be awaited.
    pub(crate) fn expect(&self, id: u64) {
        if let Ok(mut answers) = self.answers.lock() {
            answers.insert(id, None);
        }
    }

    /// The printer thread's part: hands an awaited answer over; false when
    /// nobody waits for it (then it is the printer's to print).
    pub(crate) fn deliver(&self, id: u64, answer: &T) -> bool {
        let Ok(mut answers) = self.answers.lock() else { return false };
        match answers.get_mut(&id) {
            Some(slot) => {
                *slot = Some(answer.clone());
                self.ready.notify_all();
                true
            }
            None => false,
        }
    }

    /// Waits for request `id`'s answer, at most `limit`; the id is
    /// forgotten either way.
    pub(crate) fn wait(&self, id: u64, limit: Duration) -> Option<T> {
        let deadline = Instant::now() + limit;
        let mut answers = self.answers.lock().ok()?;
        loop {
            if let Some(Some(_)) = answers.get(&id) {
                return answers.remove(&id).flatten();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                answers.remove(&id);
                return None;
            }
            answers = self.ready.wait_timeout(answers, left).ok()?.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_awaited_answer_is_handed_over_and_others_are_not() {
        let w: Arc<Waits<u32>> = Arc::default();
        assert!(!w.deliver(1, &5), "nobody waits for 1");
        w.expect(2);
        let printer = {
            let w = w.clone();
            std::thread::spawn(move || w.deliver(2, &7))
        };
        assert_eq!(w.wait(2, Duration::from_secs(10)), Some(7));
        assert!(printer.join().unwrap());
        // Forgotten once answered; a wait that runs out forgets it too.
        assert!(!w.deliver(2, &8));
        w.expect(3);
        assert_eq!(w.wait(3, Duration::from_millis(1)), None);
        assert!(!w.deliver(3, &9));
    }
}
