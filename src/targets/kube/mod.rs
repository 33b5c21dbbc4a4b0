//! The Kubernetes target (`KubeTarget`, in `target`). Pure parts decide: health as
//! kstatus computes it (`health`), leader election over a Lease (`lease`), the order
//! of an apply (`order`), what to send for an object and how to read refusals
//! (`apply`), drift (`drift`), the inventory's encoding (`inventory`) and how a
//! health check reads its objects (`reads`). Thin parts act: connecting (`client`),
//! discovery (`resources`), requests (`executor`), Helm hooks as cluster Jobs
//! (`hooks`) and the leader gate (`leader`).

pub mod apply;
pub mod client;
pub mod drift;
pub mod executor;
pub mod health;
pub mod hooks;
pub mod inventory;
pub mod leader;
pub mod lease;
pub mod order;
pub mod reads;
pub mod resources;
pub mod target;

pub use target::{Error, KubeTarget};
