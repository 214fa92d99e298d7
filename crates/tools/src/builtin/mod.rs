//! Built-in server-side tools.

pub mod python;
