//! Randomness from the operating system, for seeding the core.
//!
//! The core draws every random value from one 32-byte seed; this is the
//! only place the real drivers ask the OS for randomness.

use std::io;

/// 32 bytes from the OS's CSPRNG (`getrandom(2)` on Linux).
pub fn os_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| {
        io::Error::other(format!(
            "cannot read random bytes from the operating system: {e}"
        ))
    })?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn seeds_differ() {
        let a = super::os_seed().unwrap();
        let b = super::os_seed().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
    }
}
