//! The Kubernetes side: the controllers, their watches and caches, and the controllers' writes.
//! Who writes what: [`node`] makes each Node's ENIPool (metadata and `spec`); [`pool`] runs the
//! EC2 round for a pool and writes its operator-owned `status` through [`status`]; [`finalizer`]
//! releases a deleted pool; [`policy`] writes ENIPoolPolicy `status`; [`gc`] deletes leaked ENIs.
//! Nothing here decides sizing or calls EC2 mutations itself: that is [`crate::round`].

pub mod client;
pub mod context;
pub mod finalizer;
pub mod gc;
pub mod node;
pub mod policy;
pub mod pool;
pub mod scope;
pub mod status;
pub mod synced;
pub mod watches;

pub use context::{valid, Context};
