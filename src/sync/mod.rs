//! Sync: the pure planner (`plan`) and the reconcile loop that fetches a revision,
//! loads it, plans against the target's inventory and has the target apply the plan.

pub mod api;
pub mod control;
pub mod health;
pub mod hooks;
pub mod inventory;
pub mod plan;
pub mod reconcile;

pub use inventory::Inventory;
pub use plan::{plan, Action, ApplyPlan, Op};
