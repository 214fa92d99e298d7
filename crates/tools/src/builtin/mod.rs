//! Built-in server-side tools.

pub mod calc;
pub mod http_get;
pub mod plan;
pub mod python;
mod python_fork;
pub mod search;
pub mod validate;
