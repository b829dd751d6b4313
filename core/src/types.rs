//! Identifier newtypes. A Raft log index is not an MVCC revision and a term is not
//! an index, even where the numbers happen to match; the types keep them apart.

use std::fmt;

macro_rules! counter_newtype {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            pub const ZERO: $name = $name(0);

            /// The next value. Panics on overflow, which would take 2^64 increments.
            #[must_use]
            pub fn next(self) -> $name {
                $name(self.0.checked_add(1).expect(concat!(stringify!($name), " overflow")))
            }

            /// The previous value, saturating at zero.
            #[must_use]
            pub fn prev(self) -> $name {
                $name(self.0.saturating_sub(1))
            }

            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

counter_newtype!(
    /// A member's Raft ID. `NodeId::NONE` (0) means "nobody" (no leader, no vote).
    NodeId,
    "n"
);
counter_newtype!(
    /// A Raft term.
    Term,
    "t"
);
counter_newtype!(
    /// A position in the Raft log; the first entry has index 1.
    LogIndex,
    "i"
);

impl NodeId {
    pub const NONE: NodeId = NodeId(0);

    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl LogIndex {
    /// `self + n`, panicking on overflow.
    #[must_use]
    pub fn plus(self, n: u64) -> LogIndex {
        LogIndex(self.0.checked_add(n).expect("LogIndex overflow"))
    }

    /// Number of indexes in `(from, self]`, zero when `from >= self`.
    pub fn distance_from(self, from: LogIndex) -> u64 {
        self.0.saturating_sub(from.0)
    }
}

/// A client request's identity, chosen by the driver and handed back with the reply.
/// The core never interprets it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub u64);
