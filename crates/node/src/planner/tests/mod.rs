//! Planner tests: a simulated worker drives [`plan`](super::plan) through the spec's test
//! cases on a fake clock.

mod rules;
mod running;
mod sim;
mod startup;
mod termination;
