//! mio tokens handed out as they are needed: the daemon's fixed sockets
//! take theirs first, the IPC server a contiguous range, and the gateway's
//! listeners and bridged TCP connections one each while they live. A
//! token given back is reused, so a long-running daemon never runs out.

use std::collections::BTreeSet;
use std::ops::Range;

use mio::Token;

/// Hands out unique tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    next: usize,
    free: BTreeSet<usize>,
}

impl Tokens {
    /// An allocator whose first token is 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// One token, a freed one first.
    pub fn take(&mut self) -> Token {
        if let Some(t) = self.free.pop_first() {
            return Token(t);
        }
        self.next += 1;
        Token(self.next - 1)
    }

    /// `len` consecutive tokens that are never given back (a server that
    /// manages a range of its own, such as the IPC server).
    pub fn range(&mut self, len: usize) -> Range<usize> {
        let start = self.next;
        self.next += len;
        start..self.next
    }

    /// Gives a token back for reuse.
    pub fn give_back(&mut self, token: Token) {
        if token.0 < self.next {
            self.free.insert(token.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_reused() {
        let mut t = Tokens::new();
        let a = t.take();
        let r = t.range(3);
        let b = t.take();
        assert_eq!(a, Token(0));
        assert_eq!(r, 1..4);
        assert_eq!(b, Token(4));
        t.give_back(a);
        assert_eq!(t.take(), Token(0));
        assert_eq!(t.take(), Token(5));
        t.give_back(Token(99));
        assert_eq!(t.take(), Token(6));
    }
}
