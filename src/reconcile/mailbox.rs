//! A job actor's mailbox: an unbounded queue with one sender (the reconciler's map of actors)
//! and one receiver (the actor).
//!
//! It exists for its size. tokio's unbounded channel allocates, per channel and up front, its
//! cache-padded state (0.5 KB) and a first block of 32 messages (0.5 KB): 10 MB over 10,000
//! idle jobs. This one is an `Arc` of a mutex, a queue that allocates on its first message, and
//! a [`Notify`]: about 0.1 KB.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// What both ends share.
struct Shared<T> {
    /// The queue and which end is gone.
    state: Mutex<State<T>>,
    /// Wakes the receiver (a permit is kept when it is not waiting).
    notify: Notify,
}

/// The queue and which end is gone.
struct State<T> {
    /// Messages not yet received, oldest first.
    queue: VecDeque<T>,
    /// The sender was dropped: once the queue is empty, `recv` answers `None`.
    sender_gone: bool,
    /// The receiver was dropped: `send` gives messages back.
    receiver_gone: bool,
}

/// The sending end.
pub struct Sender<T>(Arc<Shared<T>>);

/// The receiving end.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A new, empty mailbox.
pub fn mailbox<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            sender_gone: false,
            receiver_gone: false,
        }),
        notify: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `msg`; gives it back when the receiver is gone (the actor ended).
    pub fn send(&self, msg: T) -> Result<(), T> {
        {
            let mut state = self.0.state.lock();
            if state.receiver_gone {
                return Err(msg);
            }
            state.queue.push_back(msg);
        }
        self.0.notify.notify_one();
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.state.lock().sender_gone = true;
        self.0.notify.notify_one();
    }
}

impl<T> Receiver<T> {
    /// The oldest message, waiting for one; `None` once the sender is gone and nothing is left.
    /// Cancel-safe: a message leaves the queue only in the call that returns it.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut state = self.0.state.lock();
                if let Some(msg) = state.queue.pop_front() {
                    return Some(msg);
                }
                if state.sender_gone {
                    return None;
                }
            }
            // A `send` between the look above and this wait leaves a permit: no wake-up is lost.
            self.0.notify.notified().await;
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let left = {
            let mut state = self.0.state.lock();
            state.receiver_gone = true;
            std::mem::take(&mut state.queue)
        };
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn messages_arrive_in_order_and_none_once_the_sender_is_gone() {
        let (tx, mut rx) = mailbox();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        for i in 0..5 {
            assert_eq!(rx.recv().await, Some(i));
        }
        tx.send(9).unwrap();
        drop(tx);
        assert_eq!(
            rx.recv().await,
            Some(9),
            "what was sent before is still received"
        );
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_and_a_dropped_one_gives_messages_back() {
        let (tx, mut rx) = mailbox();
        let waiting = tokio::spawn(async move {
            let got = rx.recv().await;
            (got, rx)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send("a").unwrap();
        let (got, rx) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some("a"));
        drop(rx);
        assert_eq!(tx.send("b"), Err("b"));
    }

    #[tokio::test]
    async fn a_wait_given_up_loses_no_message() {
        let (tx, mut rx) = mailbox();
        // The actor's select takes another branch: its wait is dropped, once before a message
        // comes and once after the message woke it.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), rx.recv())
                .await
                .is_err()
        );
        {
            let mut wait = Box::pin(rx.recv());
            tokio::select! {
                biased;
                _ = &mut wait => unreachable!("nothing sent yet"),
                () = std::future::ready(()) => {}
            }
            tx.send(1).unwrap();
        }
        tx.send(2).unwrap();
        for want in [1, 2] {
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            assert_eq!(got, Ok(Some(want)));
        }
    }
}
