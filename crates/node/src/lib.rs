//! The node agent: the pure lifecycle planner, pod workers, probes, hooks and the
//! process runtime.

pub mod access;
pub mod agent;
pub mod gofmt;
pub mod hook;
pub mod planner;
pub mod probe;
pub mod runtime;
pub mod worker;
