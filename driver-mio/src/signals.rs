//! SIGTERM, SIGINT and SIGHUP as mio events.
//!
//! signal-hook installs async-signal-safe handlers that only write to a
//! self-pipe; the loop reads which signals arrived when the pipe becomes
//! readable, so shutdown runs as ordinary code between two loop turns.

use std::io;

use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals as MioSignals;

/// A signal the loop acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: stop cleanly (what `kill` and service managers send).
    Terminate,
    /// SIGINT: stop cleanly (Ctrl-C).
    Interrupt,
    /// SIGHUP: reopen logs or reload, as the owner decides.
    Hangup,
}

/// The three signals, registered with a mio [`Registry`].
pub struct Signals {
    inner: MioSignals,
    token: Token,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("token", &self.token)
            .finish()
    }
}

impl Signals {
    /// Catches SIGTERM, SIGINT and SIGHUP from now on and registers their
    /// pipe under `token`.
    pub fn register(registry: &Registry, token: Token) -> io::Result<Self> {
        let mut inner = MioSignals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(|e| io::Error::new(e.kind(), format!("cannot catch signals: {e}")))?;
        registry
            .register(&mut inner, token, Interest::READABLE)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot register signals with the event loop: {e}"),
                )
            })?;
        Ok(Signals { inner, token })
    }

    /// The token its events carry.
    pub fn token(&self) -> Token {
        self.token
    }

    /// The signals that arrived since the last call (each kind at most
    /// once per call, however often it was sent).
    pub fn pending(&mut self) -> Vec<Signal> {
        self.inner
            .pending()
            .filter_map(|s| match s {
                SIGTERM => Some(Signal::Terminate),
                SIGINT => Some(Signal::Interrupt),
                SIGHUP => Some(Signal::Hangup),
                _ => None,
            })
            .collect()
    }
}

impl Signal {
    /// True for the signals that ask the process to stop.
    pub fn is_stop(self) -> bool {
        matches!(self, Signal::Terminate | Signal::Interrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Duration;

    #[test]
    fn a_signal_arrives_as_an_event() {
        let mut poll = Poll::new().unwrap();
        let mut signals = Signals::register(poll.registry(), Token(7)).unwrap();
        // SIGHUP: caught by the handler just installed, so harmless to
        // the test process.
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        let mut events = Events::with_capacity(4);
        let mut got = Vec::new();
        for _ in 0..50 {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if events.iter().any(|e| e.token() == signals.token()) {
                got.extend(signals.pending());
            }
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got, vec![Signal::Hangup]);
        assert!(!Signal::Hangup.is_stop() && Signal::Terminate.is_stop());
    }
}
