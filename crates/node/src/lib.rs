//! The node agent: the pure lifecycle planner, pod workers, probes, hooks and the
//! process runtime.

pub mod planner;
pub mod access;
