//! One module per command group. Each group is a clap `Subcommand` enum
//! flattened into the top level (so `pilotctl handshake`, not
//! `pilotctl trust handshake`) with a `run` method and a `DOCS` table
//! describing each command's JSON result and error codes; `context`
//! joins that table with the parser's own definitions, and a test checks
//! that every command has exactly one entry, so the two cannot drift.

pub mod client;
pub mod context;
pub mod daemon;
pub mod data_arg;
pub mod demo;
pub mod detach;
pub mod diag;
pub mod gateway;
pub mod identity;
pub mod messaging;
pub mod rendezvous;
pub mod settings;
pub mod status;
pub mod trust;

/// What `pilotctl context` says of one command beyond what clap knows.
#[derive(Debug, Clone, Copy)]
pub struct CommandDoc {
    /// The command as typed after `pilotctl`, e.g. `daemon start`.
    pub name: &'static str,
    /// The shape of `data` in its `--json` answer, as JSON text: each
    /// leaf value names a type (`"string"`, `"number"`, `"bool"`,
    /// `"string|null"`, `"object"`); an array holds the shape of one
    /// element. Commands that stream print one such object per line.
    pub returns: &'static str,
    /// The error codes it may answer (every command may also answer
    /// `internal`).
    pub errors: &'static [&'static str],
}

/// Every group's table, in help order.
pub fn all_docs() -> Vec<CommandDoc> {
    [
        daemon::DOCS,
        rendezvous::DOCS,
        identity::DOCS,
        trust::DOCS,
        status::DOCS,
        diag::DOCS,
        messaging::DOCS,
        gateway::DOCS,
        demo::DOCS,
        context::DOCS,
    ]
    .concat()
}
