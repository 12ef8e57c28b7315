//! The node agent: the pure lifecycle planner, pod workers, probes, hooks and the
//! process runtime.

pub mod planner;
pub mod access;
pub mod runtime;
pub mod probe;
pub mod hook;
pub mod worker;
