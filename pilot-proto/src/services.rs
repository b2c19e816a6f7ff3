//! The protocols of the built-in services every agent offers on its virtual
//! ports, as pure codecs and state machines over byte streams.
//!
//! Each service runs on one reliable byte stream per connection (see
//! [`crate::addr::ports`]); these modules neither know nor care how the bytes
//! travel. The caller feeds whatever chunk the stream delivered into an
//! `on_bytes` method, then drains the output (`poll_*` until `None`) and
//! writes it back to the same stream. Echo (port 7) needs no codec.
//!
//! - [`framing`]: the length-prefixed frames both services share.
//! - [`json`]: a bounded JSON syntax check for JSON messages.
//! - [`dataexchange`]: typed messages and files with acknowledgements
//!   (port 1001).
//! - [`eventstream`]: publish/subscribe with topic wildcards (port 1002).
//!
//! `docs/PROTOCOL.md` §10 is the wire specification.

pub mod dataexchange;
pub mod eventstream;
pub mod framing;
pub mod json;
