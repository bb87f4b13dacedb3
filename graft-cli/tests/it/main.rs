//! graft-cli's integration tests: the real binary against real graft-kv
//! processes. One test binary (so one link) with a module per concern.

mod commands;
mod exactly_once;
mod history;
mod lease;
mod lock;
mod members;
mod repl;
mod stdin;
mod util;
mod verify;
mod watch;
