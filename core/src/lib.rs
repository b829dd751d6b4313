//! The pure core of an etcd-compatible store: Raft and the replicated state
//! machine, behind a sans-io interface.
//!
//! # Purity rule
//! Nothing in this crate blocks, sleeps, reads a clock, touches a file or a
//! socket, spawns a thread, or draws randomness from anywhere but a seed passed
//! in. Time is ticks; collections iterate in a deterministic order
//! (`BTreeMap`, `Vec`). Inputs go in through [`node::Node::step`]; effects come
//! out of [`node::Node::ready`] in the order a driver must perform them. The
//! same code runs under the simulator (`sim/`) and in the server (`net/`).

pub mod auth;
pub mod cluster;
pub mod codec;
pub mod error;
pub mod etcd;
pub mod hash;
pub mod lease;
pub mod limits;
pub mod mvcc;
pub mod node;
pub mod raft;
pub mod register;
pub mod request;
pub mod storage;
pub mod testing;
pub mod types;
pub mod wal;
pub mod watch;

pub use node::{Input, Node, NodeConfig, NodeError, Outcome, Persist, Ready, StateMachine};
pub use raft::{Raft, RaftConfig, Role};
pub use types::{LogIndex, NodeId, ReqId, Term};
