//! Waiting for the next change of a watch channel across many waits (KILL, shutdown, a
//! ban): the wait registers with the channel once and stays registered between polls,
//! instead of registering and unregistering on every request.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::sync::watch;

/// The next change of a watch channel, or its sender going away. Once fired it stays
/// fired (`Default` is a fired signal).
#[derive(Default)]
pub struct Signal(Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>);

impl Signal {
    pub fn new<T: Send + Sync + 'static>(mut rx: watch::Receiver<T>) -> Signal {
        Signal(Some(Box::pin(async move {
            let _ = rx.changed().await;
        })))
    }

    /// A signal that never fires.
    pub fn never() -> Signal {
        Signal(Some(Box::pin(std::future::pending())))
    }

    /// Resolves when the channel changes (at once if it already did).
    pub async fn fired(&mut self) {
        std::future::poll_fn(|cx| match &mut self.0 {
            None => Poll::Ready(()),
            Some(wait) => {
                std::task::ready!(wait.as_mut().poll(cx));
                self.0 = None;
                Poll::Ready(())
            }
        })
        .await
    }

    pub fn has_fired(&self) -> bool {
        self.0.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_once_changed_and_stays_fired() {
        let (tx, rx) = watch::channel(0u64);
        let mut signal = Signal::new(rx);
        let pending = tokio::time::timeout(std::time::Duration::from_millis(20), signal.fired());
        assert!(pending.await.is_err(), "fired before any change");
        assert!(!signal.has_fired());
        tx.send_replace(1);
        signal.fired().await;
        assert!(signal.has_fired());
        signal.fired().await;
        drop(tx);
        let (tx, rx) = watch::channel(0u64);
        let mut gone = Signal::new(rx);
        drop(tx);
        gone.fired().await;
    }
}
