//! etcd's auth *data*: users, roles, key-range permissions, the enabled flag
//! and the auth revision, with the pure checks that read them.
//!
//! No hashing, no tokens, no I/O. Passwords arrive already hashed (etcd's
//! server hashes before proposing, so the log carries hashes), and tokens and
//! authentication live elsewhere. Every method is applied from committed log
//! entries on every member, so each is a deterministic function of (state,
//! call): collections are `BTreeMap`/`BTreeSet`/sorted `Vec`, and nothing
//! depends on hashing order, clocks or randomness.
//!
//! # Behaviour, matched to etcd v3.4/v3.5 `server/auth/store.go`
//! * Each successful mutation bumps [`AuthStore::revision`] by exactly one and
//!   a failed one changes nothing, with etcd's exceptions, which succeed
//!   without touching the revision: [`AuthStore::auth_enable`] (etcd only
//!   re-reads the stored revision when enabling; tokens cannot exist while
//!   auth is off, and disabling already bumped), enabling when already
//!   enabled, disabling when already disabled, and granting a user a role it
//!   already has (etcd logs "ignored grant role request" and returns success).
//!   Re-granting a permission on the same `(key, range_end)` *does* bump, as
//!   etcd rewrites the role either way.
//! * A fresh store is at revision 1, as etcd's `NewAuthStore` commits one
//!   revision on an empty backend; token revision 0 means "no user" there.
//! * The role named `root` is ordinary data except that holding it grants
//!   everything. `role_add("root")` is allowed (it is the `etcdctl role add
//!   root` flow), and `user_grant_role(u, "root")` is allowed even if no role
//!   named `root` exists. While auth is enabled, deleting user `root`,
//!   deleting role `root`, or revoking role `root` from user `root` fails with
//!   [`AuthError::InvalidAuthMgmt`]; that check runs before any lookup, as in
//!   etcd. While auth is disabled all three are allowed.
//! * [`AuthStore::role_delete`] also removes the role from every user holding
//!   it, in the same revision.
//! * [`AuthStore::role_grant_permission`] rejects a range that etcd's
//!   `isValidPermissionRange` rejects (empty key, or a non-empty `range_end`
//!   other than `[0]` that is `<= key`) with `InvalidAuthMgmt`, before looking
//!   the role up.
//! * A user created with `no_password` stores no hash, and changing its
//!   password leaves it without one (etcd stores `nil` in both cases).
//! * An empty `password_hash` with `no_password == false` is accepted here.
//!   etcd's store accepts it too: the server hashes whatever password it was
//!   given (even ""), and only `etcdctl` refuses an empty password. A user
//!   with an empty hash simply never authenticates by password.
//! * [`AuthStore::role_get`] returns the role's stored permissions, also for
//!   `root` (v3.4/v3.5; v3.6 reports a synthetic all-keys permission instead).
//!
//! # Where this deliberately differs from etcd
//! * A role's permissions are kept sorted by `(key, range_end)` and unique on
//!   that pair. etcd sorts by key only and finds the entry to update with a
//!   binary search on key, so two grants sharing a key but not a range end
//!   can leave duplicates there. Revoke matches on `(key, range_end)` in both.
//!
//! # Key ranges
//! `(key, range_end)` as in etcd: an empty `range_end` is the single key,
//! `range_end == [0]` is every key `>= key`, anything else is
//! `[key, range_end)`. Keys compare as plain byte strings.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;

/// The user whose existence and root role `auth_enable` requires.
pub const ROOT_USER: &str = "root";
/// The role that grants every permission to whoever holds it.
pub const ROOT_ROLE: &str = "root";

/// Version byte leading every [`AuthStore::snapshot`].
pub const SNAPSHOT_VERSION: u8 = 1;

/// etcd's `authpb.Permission.Type`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PermType {
    Read,
    Write,
    ReadWrite,
}

impl PermType {
    /// etcd's wire number: READ=0, WRITE=1, READWRITE=2.
    fn code(self) -> u8 {
        match self {
            PermType::Read => 0,
            PermType::Write => 1,
            PermType::ReadWrite => 2,
        }
    }

    fn from_code(code: u8) -> Option<PermType> {
        match code {
            0 => Some(PermType::Read),
            1 => Some(PermType::Write),
            2 => Some(PermType::ReadWrite),
            _ => None,
        }
    }

    fn allows(self, access: Access) -> bool {
        match (self, access) {
            (PermType::ReadWrite, Access::Read | Access::Write) => true,
            (PermType::Read, Access::Read) | (PermType::Write, Access::Write) => true,
            (PermType::Read, Access::Write) | (PermType::Write, Access::Read) => false,
        }
    }
}

/// One kind of access a request needs; `ReadWrite` needs both.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// A grant of `perm_type` on a key range (see the module docs for the range
/// conventions). Fields are ordered so that the derived `Ord` is the order a
/// role keeps: by key, then range end.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub key: Bytes,
    pub range_end: Bytes,
    pub perm_type: PermType,
}

impl Permission {
    pub fn new(
        perm_type: PermType,
        key: impl Into<Bytes>,
        range_end: impl Into<Bytes>,
    ) -> Permission {
        Permission {
            key: key.into(),
            range_end: range_end.into(),
            perm_type,
        }
    }

    /// etcd's `isValidPermissionRange`: a non-empty key, and a range end that
    /// is empty (single key), `[0]` (from key), or strictly after the key.
    /// An empty range would grant nothing, so etcd refuses it as a mistake.
    pub fn has_valid_range(&self) -> bool {
        if self.key.is_empty() {
            return false;
        }
        self.range_end.is_empty() || is_from_key(&self.range_end) || self.key < self.range_end
    }

    /// The identity of a permission within a role: re-granting the same pair
    /// updates the type, and revoking names only the pair.
    fn range_id(&self) -> (&[u8], &[u8]) {
        (&self.key, &self.range_end)
    }
}

fn is_from_key(range_end: &[u8]) -> bool {
    range_end == [0]
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Empty for a `no_password` user.
    pub password_hash: Bytes,
    pub no_password: bool,
    pub roles: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// Sorted by `(key, range_end)`, unique on that pair, every range valid.
    pub permissions: Vec<Permission>,
}

/// etcd's auth revision: bumped by auth mutations and carried in tokens so
/// that a token issued before a change is refused after it. It is not an MVCC
/// revision, even though etcd calls both "revision".
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuthRevision(pub u64);

impl AuthRevision {
    /// The next revision. Panics on overflow, which takes 2^64 mutations.
    #[must_use]
    pub fn next(self) -> AuthRevision {
        AuthRevision(self.0.checked_add(1).expect("auth revision overflow"))
    }
}

impl fmt::Display for AuthRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The errors of etcd's auth store that this layer decides. `Display` is the
/// exact text etcd sends to clients (`api/v3rpc/rpctypes/error.go`); the gRPC
/// code is the network layer's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    RootUserNotExist,
    RootRoleNotExist,
    UserAlreadyExist,
    UserEmpty,
    UserNotFound,
    RoleAlreadyExist,
    RoleNotFound,
    RoleEmpty,
    /// For a grant request whose permission is absent. Never returned here:
    /// [`Permission`] cannot be absent, so the request decoder reports it.
    PermissionNotGiven,
    /// What a caller returns when [`AuthStore::is_permitted`] or
    /// [`AuthStore::is_admin`] says no. Never returned by this module.
    PermissionDenied,
    RoleNotGranted,
    PermissionNotGranted,
    InvalidAuthMgmt,
}

impl AuthError {
    /// The gRPC status code etcd sends with this error, by name. The network
    /// layer turns the name into a status; keeping it next to the text lets
    /// one table test check both against etcd's list.
    pub fn grpc_code(&self) -> &'static str {
        match self {
            AuthError::UserEmpty
            | AuthError::RoleEmpty
            | AuthError::PermissionNotGiven
            | AuthError::InvalidAuthMgmt => "InvalidArgument",
            AuthError::RootUserNotExist
            | AuthError::RootRoleNotExist
            | AuthError::UserAlreadyExist
            | AuthError::UserNotFound
            | AuthError::RoleAlreadyExist
            | AuthError::RoleNotFound
            | AuthError::RoleNotGranted
            | AuthError::PermissionNotGranted => "FailedPrecondition",
            AuthError::PermissionDenied => "PermissionDenied",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            AuthError::RootUserNotExist => "etcdserver: root user does not exist",
            AuthError::RootRoleNotExist => "etcdserver: root user does not have root role",
            AuthError::UserAlreadyExist => "etcdserver: user name already exists",
            AuthError::UserEmpty => "etcdserver: user name is empty",
            AuthError::UserNotFound => "etcdserver: user name not found",
            AuthError::RoleAlreadyExist => "etcdserver: role name already exists",
            AuthError::RoleNotFound => "etcdserver: role name not found",
            AuthError::RoleEmpty => "etcdserver: role name is empty",
            AuthError::PermissionNotGiven => "etcdserver: permission not given",
            AuthError::PermissionDenied => "etcdserver: permission denied",
            AuthError::RoleNotGranted => "etcdserver: role is not granted to the user",
            AuthError::PermissionNotGranted => "etcdserver: permission is not granted to the role",
            AuthError::InvalidAuthMgmt => "etcdserver: invalid auth management",
        };
        f.write_str(text)
    }
}

impl std::error::Error for AuthError {}

/// Why [`AuthStore::restore`] refused its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a field.
    Truncated,
    /// The first byte is not a snapshot version this code reads.
    BadVersion(u8),
    /// A flag or permission-type byte had no meaning.
    BadTag(u8),
    /// A varint ran over ten bytes or past u64.
    BadVarint,
    /// A length or count exceeds what the remaining input could hold.
    BadLength(u64),
    /// Bytes were left over after a complete snapshot.
    TrailingBytes(usize),
    /// A user or role name was not UTF-8.
    BadUtf8,
    /// The fields decoded, but describe a state this module never produces
    /// (unsorted or duplicate entries, a dangling role, enabled without root).
    Invariant(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated input"),
            DecodeError::BadVersion(v) => write!(f, "unknown auth snapshot version {v}"),
            DecodeError::BadTag(t) => write!(f, "unknown tag {t}"),
            DecodeError::BadVarint => write!(f, "malformed varint"),
            DecodeError::BadLength(n) => write!(f, "length {n} exceeds input"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} trailing bytes"),
            DecodeError::BadUtf8 => write!(f, "name is not UTF-8"),
            DecodeError::Invariant(what) => write!(f, "invalid auth state: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The replicated auth state. Fields are private so that every change goes
/// through a method that keeps the invariants [`AuthStore::restore`] checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthStore {
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    enabled: bool,
    revision: AuthRevision,
}

impl Default for AuthStore {
    /// Not derived: a fresh store is at revision 1, as in etcd (see module docs).
    fn default() -> AuthStore {
        AuthStore {
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            enabled: false,
            revision: AuthRevision(1),
        }
    }
}

impl AuthStore {
    /// An empty store: no users, no roles, auth disabled, revision 1.
    pub fn new() -> AuthStore {
        AuthStore::default()
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> AuthRevision {
        self.revision
    }

    /// The stored user, for the layer that checks passwords.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// The stored role.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every mutation funnels through here, after all its checks passed.
    fn commit(&mut self) {
        self.revision = self.revision.next();
        debug_assert_eq!(self.check_invariants(), Ok(()));
    }

    /// Adds a user with no roles. With `no_password` the hash is dropped, as
    /// etcd does. Errors: `UserEmpty`, `UserAlreadyExist`.
    pub fn user_add(
        &mut self,
        name: &str,
        password_hash: Bytes,
        no_password: bool,
    ) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(AuthError::UserAlreadyExist);
        }
        let password_hash = if no_password {
            Bytes::new()
        } else {
            password_hash
        };
        self.users.insert(
            name.to_owned(),
            User {
                name: name.to_owned(),
                password_hash,
                no_password,
                roles: BTreeSet::new(),
            },
        );
        self.commit();
        Ok(())
    }

    /// Errors: `InvalidAuthMgmt` for `root` while enabled (checked first, so
    /// auth can never be left on with nobody able to administer it), then
    /// `UserNotFound`.
    pub fn user_delete(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT_USER {
            return Err(AuthError::InvalidAuthMgmt);
        }
        if self.users.remove(name).is_none() {
            return Err(AuthError::UserNotFound);
        }
        self.commit();
        Ok(())
    }

    /// Replaces the hash. A `no_password` user keeps no hash, yet the call
    /// still succeeds and bumps the revision, as in etcd. Errors: `UserNotFound`.
    pub fn user_change_password(
        &mut self,
        name: &str,
        password_hash: Bytes,
    ) -> Result<(), AuthError> {
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        if !user.no_password {
            user.password_hash = password_hash;
        }
        self.commit();
        Ok(())
    }

    /// Errors: `UserNotFound`, then `RoleNotFound` unless `role` is `root`
    /// (which may be granted before any role of that name exists). Granting a
    /// role the user already has succeeds without bumping the revision.
    pub fn user_grant_role(&mut self, user: &str, role: &str) -> Result<(), AuthError> {
        if !self.users.contains_key(user) {
            return Err(AuthError::UserNotFound);
        }
        if role != ROOT_ROLE && !self.roles.contains_key(role) {
            return Err(AuthError::RoleNotFound);
        }
        let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
        if !u.roles.insert(role.to_owned()) {
            return Ok(());
        }
        self.commit();
        Ok(())
    }

    /// Errors: `InvalidAuthMgmt` for (`root`, `root`) while enabled (checked
    /// first), `UserNotFound`, `RoleNotGranted`. Whether a role of that name
    /// exists is not consulted, as in etcd.
    pub fn user_revoke_role(&mut self, user: &str, role: &str) -> Result<(), AuthError> {
        if self.enabled && user == ROOT_USER && role == ROOT_ROLE {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
        if !u.roles.remove(role) {
            return Err(AuthError::RoleNotGranted);
        }
        self.commit();
        Ok(())
    }

    /// The user's roles, sorted. Errors: `UserNotFound`.
    pub fn user_get(&self, name: &str) -> Result<Vec<String>, AuthError> {
        let user = self.users.get(name).ok_or(AuthError::UserNotFound)?;
        Ok(user.roles.iter().cloned().collect())
    }

    /// Every user name, sorted.
    pub fn user_list(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Adds a role with no permissions; `root` is allowed. Errors:
    /// `RoleEmpty`, `RoleAlreadyExist`.
    pub fn role_add(&mut self, name: &str) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        self.roles.insert(
            name.to_owned(),
            Role {
                name: name.to_owned(),
                permissions: Vec::new(),
            },
        );
        self.commit();
        Ok(())
    }

    /// Deletes the role and takes it away from every user, in one revision.
    /// Errors: `InvalidAuthMgmt` for `root` while enabled (checked first),
    /// then `RoleNotFound`.
    pub fn role_delete(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT_ROLE {
            return Err(AuthError::InvalidAuthMgmt);
        }
        if self.roles.remove(name).is_none() {
            return Err(AuthError::RoleNotFound);
        }
        for user in self.users.values_mut() {
            user.roles.remove(name);
        }
        self.commit();
        Ok(())
    }

    /// Adds the permission, or sets the type of the one already granted on
    /// the same `(key, range_end)`; either way the revision bumps. Errors:
    /// `InvalidAuthMgmt` for a range etcd refuses (checked first), then
    /// `RoleNotFound`.
    pub fn role_grant_permission(&mut self, role: &str, perm: Permission) -> Result<(), AuthError> {
        if !perm.has_valid_range() {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
        match r
            .permissions
            .binary_search_by(|p| p.range_id().cmp(&perm.range_id()))
        {
            Ok(i) => r.permissions[i].perm_type = perm.perm_type,
            Err(i) => r.permissions.insert(i, perm),
        }
        self.commit();
        Ok(())
    }

    /// Removes the permission on exactly `(key, range_end)`, whatever its
    /// type. Errors: `RoleNotFound`, `PermissionNotGranted`.
    pub fn role_revoke_permission(
        &mut self,
        role: &str,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
        match r
            .permissions
            .binary_search_by(|p| p.range_id().cmp(&(key, range_end)))
        {
            Ok(i) => {
                r.permissions.remove(i);
            }
            Err(_) => return Err(AuthError::PermissionNotGranted),
        }
        self.commit();
        Ok(())
    }

    /// The role's stored permissions, sorted. Errors: `RoleNotFound`.
    pub fn role_get(&self, name: &str) -> Result<Vec<Permission>, AuthError> {
        let role = self.roles.get(name).ok_or(AuthError::RoleNotFound)?;
        Ok(role.permissions.clone())
    }

    /// Every role name, sorted.
    pub fn role_list(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// Turns auth on. Already on: succeeds, changes nothing. Errors:
    /// `RootUserNotExist`, `RootRoleNotExist`. Success does not bump the
    /// revision, matching etcd (see module docs).
    pub fn auth_enable(&mut self) -> Result<(), AuthError> {
        if self.enabled {
            return Ok(());
        }
        let root = self
            .users
            .get(ROOT_USER)
            .ok_or(AuthError::RootUserNotExist)?;
        if !root.roles.contains(ROOT_ROLE) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        debug_assert_eq!(self.check_invariants(), Ok(()));
        Ok(())
    }

    /// Turns auth off and bumps the revision, which invalidates every token
    /// issued while it was on. Already off: changes nothing. Cannot fail;
    /// whether the caller may do this is `is_admin`'s question.
    pub fn auth_disable(&mut self) {
        if !self.enabled {
            return;
        }
        self.enabled = false;
        self.commit();
    }

    /// Whether `user` holds the `root` role. Independent of whether auth is
    /// enabled: etcd's `IsAdminPermitted` lets everyone through while auth is
    /// off, so a caller gating admin requests must check
    /// `!is_enabled() || is_admin(user)`. Unknown user: false.
    pub fn is_admin(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.contains(ROOT_ROLE))
    }

    /// Whether `user` may access every key of the request `(key, range_end)`.
    ///
    /// True while auth is disabled (for any name). Otherwise: unknown user,
    /// false; holder of `root`, true; else the union of the user's roles'
    /// permissions whose type allows `want` must cover the whole requested
    /// range. `ReadWrite` asks for both read and write coverage. A request
    /// whose `range_end` is not empty, not `[0]` and `<= key` selects no keys;
    /// it is judged as the single key `key`, which is what etcd's interval
    /// tree answers for it. etcd's API refuses empty request keys before this
    /// check; here an empty key is simply the smallest key.
    pub fn is_permitted(&self, user: &str, key: &[u8], range_end: &[u8], want: PermType) -> bool {
        if !self.enabled {
            return true;
        }
        let Some(u) = self.users.get(user) else {
            return false;
        };
        if u.roles.contains(ROOT_ROLE) {
            return true;
        }
        let request = Span::request(key, range_end);
        match want {
            PermType::Read => self.covers(u, &request, Access::Read),
            PermType::Write => self.covers(u, &request, Access::Write),
            PermType::ReadWrite => {
                self.covers(u, &request, Access::Read) && self.covers(u, &request, Access::Write)
            }
        }
    }

    fn covers(&self, user: &User, request: &Span<'_>, access: Access) -> bool {
        // Roles a user holds always exist, except `root`, which was handled
        // by the caller; `filter_map` would also skip a dangling one.
        let granted: Vec<Span<'_>> = user
            .roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .flat_map(|role| role.permissions.iter())
            .filter(|p| p.perm_type.allows(access))
            .map(|p| Span::grant(&p.key, &p.range_end))
            .collect();
        union_covers(granted, request)
    }

    /// Checks what every method maintains. `restore` relies on it to refuse
    /// states this code could never have produced.
    fn check_invariants(&self) -> Result<(), &'static str> {
        if self.revision.0 == 0 {
            return Err("revision is zero");
        }
        for (name, user) in &self.users {
            if name.is_empty() {
                return Err("empty user name");
            }
            if *name != user.name {
                return Err("user stored under another name");
            }
            if user.no_password && !user.password_hash.is_empty() {
                return Err("no-password user has a password hash");
            }
            if !user
                .roles
                .iter()
                .all(|r| r == ROOT_ROLE || self.roles.contains_key(r))
            {
                return Err("user holds a role that does not exist");
            }
        }
        for (name, role) in &self.roles {
            if name.is_empty() {
                return Err("empty role name");
            }
            if *name != role.name {
                return Err("role stored under another name");
            }
            if !role.permissions.iter().all(Permission::has_valid_range) {
                return Err("permission with an invalid range");
            }
            if !role
                .permissions
                .windows(2)
                .all(|w| w[0].range_id() < w[1].range_id())
            {
                return Err("permissions not strictly ascending by (key, range_end)");
            }
        }
        if self.enabled && !self.is_admin(ROOT_USER) {
            return Err("auth enabled without a root user holding the root role");
        }
        Ok(())
    }

    /// A deterministic binary image of the whole store: equal stores give
    /// equal bytes, so replicas can compare snapshots byte for byte.
    ///
    /// Layout (version 1): `version u8`, `enabled u8 (0|1)`,
    /// `revision u64 LE`, then users and roles in name order. Counts and
    /// byte strings are prefixed with an unsigned LEB128 varint.
    /// User: `name`, `password_hash`, `no_password u8`, `role count`, role
    /// names. Role: `name`, `permission count`, then each permission as
    /// `type u8 (etcd's number)`, `key`, `range_end`.
    pub fn snapshot(&self) -> Bytes {
        let mut buf = Vec::new();
        buf.push(SNAPSHOT_VERSION);
        buf.push(u8::from(self.enabled));
        buf.extend_from_slice(&self.revision.0.to_le_bytes());
        put_uvarint(&mut buf, self.users.len() as u64);
        for user in self.users.values() {
            put_bytes(&mut buf, user.name.as_bytes());
            put_bytes(&mut buf, &user.password_hash);
            buf.push(u8::from(user.no_password));
            put_uvarint(&mut buf, user.roles.len() as u64);
            for role in &user.roles {
                put_bytes(&mut buf, role.as_bytes());
            }
        }
        put_uvarint(&mut buf, self.roles.len() as u64);
        for role in self.roles.values() {
            put_bytes(&mut buf, role.name.as_bytes());
            put_uvarint(&mut buf, role.permissions.len() as u64);
            for perm in &role.permissions {
                buf.push(perm.perm_type.code());
                put_bytes(&mut buf, &perm.key);
                put_bytes(&mut buf, &perm.range_end);
            }
        }
        Bytes::from(buf)
    }

    /// Decodes a [`snapshot`](AuthStore::snapshot). Never panics, and never
    /// allocates more than the input's length justifies. Accepts only the
    /// canonical encoding (names strictly ascending, no trailing bytes) of a
    /// state that passes the store's invariants, so `restore(b)?.snapshot()
    /// == b` whenever it succeeds.
    pub fn restore(data: &[u8]) -> Result<AuthStore, DecodeError> {
        // Smallest encodings, for bounding counts before reserving: a user is
        // four one-byte fields at least, a role name in a user one, a role
        // two, a permission three.
        const MIN_USER_BYTES: usize = 4;
        const MIN_USER_ROLE_BYTES: usize = 1;
        const MIN_ROLE_BYTES: usize = 2;
        const MIN_PERMISSION_BYTES: usize = 3;

        let mut r = Reader::new(data);
        let version = r.u8()?;
        if version != SNAPSHOT_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let enabled = r.flag()?;
        let revision = AuthRevision(r.u64_le()?);

        let mut users = BTreeMap::new();
        for _ in 0..r.count(MIN_USER_BYTES)? {
            let name = r.string()?;
            let password_hash = Bytes::copy_from_slice(r.bytes()?);
            let no_password = r.flag()?;
            let mut roles = BTreeSet::new();
            for _ in 0..r.count(MIN_USER_ROLE_BYTES)? {
                let role = r.string()?;
                if roles.last().is_some_and(|last: &String| *last >= role) {
                    return Err(DecodeError::Invariant(
                        "user's roles not strictly ascending",
                    ));
                }
                roles.insert(role);
            }
            if users
                .last_key_value()
                .is_some_and(|(last, _): (&String, _)| *last >= name)
            {
                return Err(DecodeError::Invariant("user names not strictly ascending"));
            }
            let user = User {
                name: name.clone(),
                password_hash,
                no_password,
                roles,
            };
            users.insert(name, user);
        }

        let mut roles = BTreeMap::new();
        for _ in 0..r.count(MIN_ROLE_BYTES)? {
            let name = r.string()?;
            let n = r.count(MIN_PERMISSION_BYTES)?;
            let mut permissions = Vec::with_capacity(n);
            for _ in 0..n {
                let code = r.u8()?;
                let perm_type = PermType::from_code(code).ok_or(DecodeError::BadTag(code))?;
                let key = Bytes::copy_from_slice(r.bytes()?);
                let range_end = Bytes::copy_from_slice(r.bytes()?);
                permissions.push(Permission {
                    key,
                    range_end,
                    perm_type,
                });
            }
            if roles
                .last_key_value()
                .is_some_and(|(last, _): (&String, _)| *last >= name)
            {
                return Err(DecodeError::Invariant("role names not strictly ascending"));
            }
            roles.insert(name.clone(), Role { name, permissions });
        }
        r.finish()?;

        let store = AuthStore {
            users,
            roles,
            enabled,
            revision,
        };
        store.check_invariants().map_err(DecodeError::Invariant)?;
        Ok(store)
    }
}

/// The upper end of a span of keys. Derived order puts every finite end
/// before `Unbounded`, and finite ends in byte order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum End<'a> {
    /// Exclusive: the span holds keys strictly below this one.
    Below(Cow<'a, [u8]>),
    Unbounded,
}

/// The keys `[begin, end)`.
#[derive(Debug)]
struct Span<'a> {
    begin: &'a [u8],
    end: End<'a>,
}

impl<'a> Span<'a> {
    /// The single key `k` as `[k, k ++ [0])`: no key lies strictly between a
    /// key and itself followed by a zero byte, so half-open spans describe
    /// single keys exactly and adjacency merges exactly.
    fn point(key: &'a [u8]) -> Span<'a> {
        let mut after = Vec::with_capacity(key.len() + 1);
        after.extend_from_slice(key);
        after.push(0);
        Span {
            begin: key,
            end: End::Below(Cow::Owned(after)),
        }
    }

    /// A granted range. `has_valid_range` holds for stored grants, so the
    /// span is never empty.
    fn grant(key: &'a [u8], range_end: &'a [u8]) -> Span<'a> {
        if range_end.is_empty() {
            Span::point(key)
        } else if is_from_key(range_end) {
            Span {
                begin: key,
                end: End::Unbounded,
            }
        } else {
            Span {
                begin: key,
                end: End::Below(Cow::Borrowed(range_end)),
            }
        }
    }

    /// A requested range; an empty one is judged as its start key (see
    /// `is_permitted`), which also keeps every request span non-empty.
    fn request(key: &'a [u8], range_end: &'a [u8]) -> Span<'a> {
        if range_end.is_empty() || (!is_from_key(range_end) && range_end <= key) {
            Span::point(key)
        } else {
            Span::grant(key, range_end)
        }
    }
}

/// Whether the union of `granted` holds every key of `want`: sweep the grants
/// in begin order, extending the covered prefix of `want`; the first grant
/// that begins past the prefix's end leaves that key uncovered.
fn union_covers(mut granted: Vec<Span<'_>>, want: &Span<'_>) -> bool {
    // A stable sort on a deterministically built Vec: the result cannot
    // depend on anything but the state.
    granted.sort_by(|a, b| a.begin.cmp(b.begin));
    let start = End::Below(Cow::Borrowed(want.begin));
    // Every key of `want` below `covered` is known to be granted.
    let mut covered = &start;
    for span in &granted {
        if *covered >= want.end {
            return true;
        }
        if End::Below(Cow::Borrowed(span.begin)) > *covered {
            // Every grant beginning at or before the key `covered` has been
            // seen and none holds it; later grants begin after it.
            return false;
        }
        if span.end > *covered {
            covered = &span.end;
        }
    }
    *covered >= want.end
}

fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// A cursor over snapshot bytes that never reads past the end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(DecodeError::BadTag(t)),
        }
    }

    fn u64_le(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().expect("8 bytes by construction"),
        ))
    }

    fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.u8()?;
            // The tenth byte may only carry the top bit of a u64, and a last
            // byte of zero after the first is an overlong (non-canonical)
            // encoding, which the encoder never writes.
            if (shift == 63 && b > 1) || (shift > 0 && b == 0) {
                return Err(DecodeError::BadVarint);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A length-prefixed byte string, checked against the input before use.
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.uvarint()?;
        if n > self.buf.len() as u64 {
            return Err(DecodeError::BadLength(n));
        }
        self.take(n as usize)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        let s = std::str::from_utf8(b).map_err(|_| DecodeError::BadUtf8)?;
        Ok(s.to_owned())
    }

    /// A count of items that each take at least `min_item_bytes`; a count the
    /// remaining input cannot hold is refused, so callers may reserve for it.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.uvarint()?;
        let max = (self.buf.len() / min_item_bytes.max(1)) as u64;
        if n > max {
            return Err(DecodeError::BadLength(n));
        }
        Ok(n as usize)
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    fn perm(perm_type: PermType, key: &[u8], range_end: &[u8]) -> Permission {
        Permission::new(
            perm_type,
            Bytes::copy_from_slice(key),
            Bytes::copy_from_slice(range_end),
        )
    }

    fn hash(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// A store with root (holding root), auth enabled, user `u` holding
    /// roles `r1` and `r2` with no permissions yet.
    fn enabled_store() -> AuthStore {
        let mut s = AuthStore::new();
        s.user_add("root", hash("h-root"), false).unwrap();
        s.user_grant_role("root", "root").unwrap();
        s.user_add("u", hash("h-u"), false).unwrap();
        s.role_add("r1").unwrap();
        s.role_add("r2").unwrap();
        s.user_grant_role("u", "r1").unwrap();
        s.user_grant_role("u", "r2").unwrap();
        s.auth_enable().unwrap();
        s
    }

    /// `enabled_store` with the given grants on `r1`.
    fn with_grants(grants: &[Permission]) -> AuthStore {
        let mut s = enabled_store();
        for p in grants {
            s.role_grant_permission("r1", p.clone()).unwrap();
        }
        s
    }

    /// Runs `op` and asserts it fails with `want` and leaves the whole store,
    /// revision included, exactly as it was.
    fn assert_fails(
        s: &mut AuthStore,
        want: AuthError,
        op: impl FnOnce(&mut AuthStore) -> Result<(), AuthError>,
    ) {
        let before = s.clone();
        assert_eq!(op(s), Err(want));
        assert_eq!(*s, before, "a failed mutation changed the store");
    }

    /// Runs `op`, asserts success, and that the revision moved by `bump`.
    fn assert_ok(
        s: &mut AuthStore,
        bump: u64,
        op: impl FnOnce(&mut AuthStore) -> Result<(), AuthError>,
    ) {
        let before = s.revision();
        assert_eq!(op(s), Ok(()));
        assert_eq!(
            s.revision().0,
            before.0 + bump,
            "revision moved by the wrong amount"
        );
    }

    // ---- errors -----------------------------------------------------------

    #[test]
    fn error_texts_and_codes_match_etcd() {
        // api/v3rpc/rpctypes/error.go (v3.5): ErrGRPC* codes and descriptions.
        let table: &[(AuthError, &str, &str)] = &[
            (
                AuthError::RootUserNotExist,
                "FailedPrecondition",
                "etcdserver: root user does not exist",
            ),
            (
                AuthError::RootRoleNotExist,
                "FailedPrecondition",
                "etcdserver: root user does not have root role",
            ),
            (
                AuthError::UserAlreadyExist,
                "FailedPrecondition",
                "etcdserver: user name already exists",
            ),
            (
                AuthError::UserEmpty,
                "InvalidArgument",
                "etcdserver: user name is empty",
            ),
            (
                AuthError::UserNotFound,
                "FailedPrecondition",
                "etcdserver: user name not found",
            ),
            (
                AuthError::RoleAlreadyExist,
                "FailedPrecondition",
                "etcdserver: role name already exists",
            ),
            (
                AuthError::RoleNotFound,
                "FailedPrecondition",
                "etcdserver: role name not found",
            ),
            (
                AuthError::RoleEmpty,
                "InvalidArgument",
                "etcdserver: role name is empty",
            ),
            (
                AuthError::PermissionNotGiven,
                "InvalidArgument",
                "etcdserver: permission not given",
            ),
            (
                AuthError::PermissionDenied,
                "PermissionDenied",
                "etcdserver: permission denied",
            ),
            (
                AuthError::RoleNotGranted,
                "FailedPrecondition",
                "etcdserver: role is not granted to the user",
            ),
            (
                AuthError::PermissionNotGranted,
                "FailedPrecondition",
                "etcdserver: permission is not granted to the role",
            ),
            (
                AuthError::InvalidAuthMgmt,
                "InvalidArgument",
                "etcdserver: invalid auth management",
            ),
        ];
        for (err, code, text) in table {
            assert_eq!(err.to_string(), *text);
            assert_eq!(err.grpc_code(), *code, "{err:?}");
        }
        // The table holds every variant once: this match stops compiling
        // when a variant is added, and the count below then needs the new row.
        let variant_count = |e: &AuthError| match e {
            AuthError::RootUserNotExist
            | AuthError::RootRoleNotExist
            | AuthError::UserAlreadyExist
            | AuthError::UserEmpty
            | AuthError::UserNotFound
            | AuthError::RoleAlreadyExist
            | AuthError::RoleNotFound
            | AuthError::RoleEmpty
            | AuthError::PermissionNotGiven
            | AuthError::PermissionDenied
            | AuthError::RoleNotGranted
            | AuthError::PermissionNotGranted
            | AuthError::InvalidAuthMgmt => 13,
        };
        let distinct: BTreeSet<String> = table.iter().map(|(e, _, _)| format!("{e:?}")).collect();
        assert_eq!(distinct.len(), variant_count(&table[0].0));
        assert_eq!(table.len(), distinct.len());
    }

    #[test]
    fn new_store_starts_disabled_at_revision_one() {
        let s = AuthStore::new();
        assert_eq!(s.revision(), AuthRevision(1));
        assert!(!s.is_enabled());
        assert_eq!(s, AuthStore::default());
        assert!(s.user_list().is_empty());
        assert!(s.role_list().is_empty());
    }

    #[test]
    fn empty_names_are_rejected() {
        let mut s = AuthStore::new();
        assert_fails(&mut s, AuthError::UserEmpty, |s| {
            s.user_add("", hash("h"), false)
        });
        assert_fails(&mut s, AuthError::UserEmpty, |s| {
            s.user_add("", Bytes::new(), true)
        });
        assert_fails(&mut s, AuthError::RoleEmpty, |s| s.role_add(""));
        // etcd checks emptiness only on add; elsewhere "" is just not found.
        assert_fails(&mut s, AuthError::UserNotFound, |s| s.user_delete(""));
        assert_fails(&mut s, AuthError::RoleNotFound, |s| s.role_delete(""));
        s.user_add("u", hash("h"), false).unwrap();
        assert_fails(&mut s, AuthError::RoleNotFound, |s| {
            s.user_grant_role("u", "")
        });
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let mut s = AuthStore::new();
        s.user_add("u", hash("h"), false).unwrap();
        s.role_add("r").unwrap();
        assert_fails(&mut s, AuthError::UserAlreadyExist, |s| {
            s.user_add("u", hash("other"), true)
        });
        assert_fails(&mut s, AuthError::RoleAlreadyExist, |s| s.role_add("r"));
    }

    #[test]
    fn missing_users_and_roles_are_not_found() {
        let mut s = AuthStore::new();
        s.user_add("u", hash("h"), false).unwrap();
        s.role_add("r").unwrap();
        assert_fails(&mut s, AuthError::UserNotFound, |s| s.user_delete("x"));
        assert_fails(&mut s, AuthError::UserNotFound, |s| {
            s.user_change_password("x", hash("h"))
        });
        assert_fails(&mut s, AuthError::UserNotFound, |s| {
            s.user_grant_role("x", "r")
        });
        // The user is looked up before the role.
        assert_fails(&mut s, AuthError::UserNotFound, |s| {
            s.user_grant_role("x", "nope")
        });
        assert_fails(&mut s, AuthError::RoleNotFound, |s| {
            s.user_grant_role("u", "nope")
        });
        assert_fails(&mut s, AuthError::UserNotFound, |s| {
            s.user_revoke_role("x", "r")
        });
        assert_fails(&mut s, AuthError::RoleNotFound, |s| s.role_delete("nope"));
        assert_fails(&mut s, AuthError::RoleNotFound, |s| {
            s.role_grant_permission("nope", perm(PermType::Read, b"a", b""))
        });
        assert_fails(&mut s, AuthError::RoleNotFound, |s| {
            s.role_revoke_permission("nope", b"a", b"")
        });
        assert_eq!(s.user_get("x"), Err(AuthError::UserNotFound));
        assert_eq!(s.role_get("nope"), Err(AuthError::RoleNotFound));
    }

    #[test]
    fn revoking_what_was_not_granted_fails() {
        let mut s = AuthStore::new();
        s.user_add("u", hash("h"), false).unwrap();
        s.role_add("r").unwrap();
        assert_fails(&mut s, AuthError::RoleNotGranted, |s| {
            s.user_revoke_role("u", "r")
        });
        // Role existence is not consulted when revoking.
        assert_fails(&mut s, AuthError::RoleNotGranted, |s| {
            s.user_revoke_role("u", "ghost")
        });
        s.role_grant_permission("r", perm(PermType::Read, b"a", b"c"))
            .unwrap();
        assert_fails(&mut s, AuthError::PermissionNotGranted, |s| {
            s.role_revoke_permission("r", b"a", b"")
        });
        assert_fails(&mut s, AuthError::PermissionNotGranted, |s| {
            s.role_revoke_permission("r", b"a", b"b")
        });
        assert_fails(&mut s, AuthError::PermissionNotGranted, |s| {
            s.role_revoke_permission("r", b"b", b"c")
        });
        // The type is not part of a permission's identity.
        assert_ok(&mut s, 1, |s| s.role_revoke_permission("r", b"a", b"c"));
        assert_eq!(s.role_get("r"), Ok(vec![]));
    }

    #[test]
    fn grant_permission_rejects_ranges_etcd_rejects() {
        let mut s = AuthStore::new();
        s.role_add("r").unwrap();
        let invalid: &[(&[u8], &[u8])] = &[
            (b"", b"b"),      // empty key
            (b"", b""),       // empty key, single key
            (b"", &[0]),      // empty key, from key
            (b"a", b"a"),     // empty range
            (b"b", b"a"),     // inverted
            (b"a\x00", b"a"), // inverted by a suffix
            (b"b", &[0, 0]),  // not the from-key marker, and before the key
        ];
        for (key, end) in invalid {
            assert_fails(&mut s, AuthError::InvalidAuthMgmt, |s| {
                s.role_grant_permission("r", perm(PermType::Read, key, end))
            });
            // The range is judged before the role is looked up.
            assert_fails(&mut s, AuthError::InvalidAuthMgmt, |s| {
                s.role_grant_permission("nope", perm(PermType::Read, key, end))
            });
        }
        let valid: &[(&[u8], &[u8])] = &[
            (b"a", b""),
            (b"a", b"b"),
            (b"a", &[0]),
            (&[0], &[0]),
            (b"a", b"a\x00"),
        ];
        for (key, end) in valid {
            assert_ok(&mut s, 1, |s| {
                s.role_grant_permission("r", perm(PermType::Write, key, end))
            });
        }
    }

    #[test]
    fn auth_enable_requires_root_user_with_root_role() {
        let mut s = AuthStore::new();
        assert_fails(&mut s, AuthError::RootUserNotExist, |s| s.auth_enable());
        s.user_add("root", hash("h"), false).unwrap();
        assert_fails(&mut s, AuthError::RootRoleNotExist, |s| s.auth_enable());
        // Another user holding root does not help.
        s.user_add("admin", hash("h"), false).unwrap();
        s.user_grant_role("admin", "root").unwrap();
        assert_fails(&mut s, AuthError::RootRoleNotExist, |s| s.auth_enable());
        s.user_grant_role("root", "root").unwrap();
        assert_ok(&mut s, 0, |s| s.auth_enable());
        assert!(s.is_enabled());
    }

    #[test]
    fn enable_and_disable_revision_rules_match_etcd() {
        let mut s = AuthStore::new();
        s.user_add("root", hash("h"), false).unwrap();
        s.user_grant_role("root", "root").unwrap();
        // Disabling while disabled: no change at all.
        let before = s.clone();
        s.auth_disable();
        assert_eq!(s, before);
        // Enabling: no bump (etcd re-reads the stored revision).
        assert_ok(&mut s, 0, |s| s.auth_enable());
        // Enabling again: success, no change.
        let before = s.clone();
        assert_ok(&mut s, 0, |s| s.auth_enable());
        assert_eq!(s, before);
        // Disabling: bumps, so tokens from the enabled period go stale.
        let rev = s.revision();
        s.auth_disable();
        assert!(!s.is_enabled());
        assert_eq!(s.revision(), rev.next());
    }

    #[test]
    fn root_is_protected_only_while_enabled() {
        let mut s = enabled_store();
        s.role_add("root").unwrap();
        assert_fails(&mut s, AuthError::InvalidAuthMgmt, |s| {
            s.user_delete("root")
        });
        assert_fails(&mut s, AuthError::InvalidAuthMgmt, |s| {
            s.user_revoke_role("root", "root")
        });
        assert_fails(&mut s, AuthError::InvalidAuthMgmt, |s| {
            s.role_delete("root")
        });
        // Other combinations are ordinary.
        s.user_grant_role("u", "root").unwrap();
        assert_ok(&mut s, 1, |s| s.user_revoke_role("u", "root"));
        s.user_grant_role("root", "r1").unwrap();
        assert_ok(&mut s, 1, |s| s.user_revoke_role("root", "r1"));

        s.auth_disable();
        assert_ok(&mut s, 1, |s| s.user_revoke_role("root", "root"));
        assert_ok(&mut s, 1, |s| s.role_delete("root"));
        assert_ok(&mut s, 1, |s| s.user_delete("root"));
    }

    #[test]
    fn root_checks_come_before_lookups() {
        // Enabled, and root holds "root" although no role of that name exists:
        // deleting role root is refused as management, not as not-found.
        let mut s = enabled_store();
        assert!(s.role("root").is_none());
        assert_fails(&mut s, AuthError::InvalidAuthMgmt, |s| {
            s.role_delete("root")
        });
        s.auth_disable();
        assert_fails(&mut s, AuthError::RoleNotFound, |s| s.role_delete("root"));
    }

    #[test]
    fn root_role_can_be_added_and_granted_before_it_exists() {
        let mut s = AuthStore::new();
        s.user_add("root", hash("h"), false).unwrap();
        // Granting "root" needs no role of that name...
        assert_ok(&mut s, 1, |s| s.user_grant_role("root", "root"));
        assert!(s.is_admin("root"));
        // ...but `role add root` is still allowed and does not disturb it.
        assert_ok(&mut s, 1, |s| s.role_add("root"));
        assert_eq!(s.role_list(), vec!["root".to_owned()]);
        assert_eq!(s.user_get("root"), Ok(vec!["root".to_owned()]));
        // Permissions may be granted to it; role_get shows them as stored.
        assert_ok(&mut s, 1, |s| {
            s.role_grant_permission("root", perm(PermType::Read, b"k", b""))
        });
        assert_eq!(
            s.role_get("root"),
            Ok(vec![perm(PermType::Read, b"k", b"")])
        );
    }

    #[test]
    fn granting_a_held_role_is_a_silent_no_op() {
        let mut s = AuthStore::new();
        s.user_add("u", hash("h"), false).unwrap();
        s.role_add("r").unwrap();
        assert_ok(&mut s, 1, |s| s.user_grant_role("u", "r"));
        let before = s.clone();
        assert_ok(&mut s, 0, |s| s.user_grant_role("u", "r"));
        assert_eq!(s, before);
    }

    #[test]
    fn regranting_a_range_updates_its_type_and_bumps() {
        let mut s = AuthStore::new();
        s.role_add("r").unwrap();
        assert_ok(&mut s, 1, |s| {
            s.role_grant_permission("r", perm(PermType::Read, b"a", b"c"))
        });
        assert_ok(&mut s, 1, |s| {
            s.role_grant_permission("r", perm(PermType::Read, b"a", b"c"))
        });
        assert_ok(&mut s, 1, |s| {
            s.role_grant_permission("r", perm(PermType::Write, b"a", b"c"))
        });
        assert_eq!(s.role_get("r"), Ok(vec![perm(PermType::Write, b"a", b"c")]));
        // Same key, other range end: a separate permission (etcd's key-only
        // search could duplicate here; we do not).
        assert_ok(&mut s, 1, |s| {
            s.role_grant_permission("r", perm(PermType::Read, b"a", b""))
        });
        assert_ok(&mut s, 1, |s| {
            s.role_grant_permission("r", perm(PermType::Read, b"a", &[0]))
        });
        assert_ok(&mut s, 1, |s| {
            s.role_grant_permission("r", perm(PermType::ReadWrite, b"a", b"c"))
        });
        assert_eq!(
            s.role_get("r"),
            Ok(vec![
                perm(PermType::Read, b"a", b""),
                perm(PermType::Read, b"a", &[0]),
                perm(PermType::ReadWrite, b"a", b"c"),
            ])
        );
    }

    #[test]
    fn role_delete_takes_the_role_from_every_user() {
        let mut s = AuthStore::new();
        s.role_add("r").unwrap();
        s.role_add("keep").unwrap();
        for u in ["a", "b", "c"] {
            s.user_add(u, hash("h"), false).unwrap();
            s.user_grant_role(u, "keep").unwrap();
        }
        s.user_grant_role("a", "r").unwrap();
        s.user_grant_role("c", "r").unwrap();
        assert_ok(&mut s, 1, |s| s.role_delete("r"));
        for u in ["a", "b", "c"] {
            assert_eq!(s.user_get(u), Ok(vec!["keep".to_owned()]));
        }
        assert_eq!(s.role_list(), vec!["keep".to_owned()]);
        // Re-adding the role does not give it back to anyone.
        s.role_add("r").unwrap();
        assert_eq!(s.user_get("a"), Ok(vec!["keep".to_owned()]));
    }

    #[test]
    fn passwords_and_no_password_users() {
        let mut s = AuthStore::new();
        assert_ok(&mut s, 1, |s| s.user_add("np", hash("ignored"), true));
        assert_eq!(
            s.user("np").map(|u| u.password_hash.clone()),
            Some(Bytes::new())
        );
        assert_ok(&mut s, 1, |s| {
            s.user_change_password("np", hash("still-ignored"))
        });
        let np = s.user("np").unwrap();
        assert!(np.no_password);
        assert!(np.password_hash.is_empty());

        assert_ok(&mut s, 1, |s| s.user_add("p", hash("h1"), false));
        assert_ok(&mut s, 1, |s| s.user_change_password("p", hash("h2")));
        assert_eq!(s.user("p").unwrap().password_hash, hash("h2"));

        // An empty hash without no_password is accepted, as in etcd's store.
        assert_ok(&mut s, 1, |s| s.user_add("e", Bytes::new(), false));
        assert!(!s.user("e").unwrap().no_password);
    }

    #[test]
    fn lists_are_sorted() {
        let mut s = AuthStore::new();
        for n in ["m", "b", "z", "a"] {
            s.user_add(n, hash("h"), false).unwrap();
            s.role_add(n).unwrap();
        }
        for r in ["z", "a", "m"] {
            s.user_grant_role("b", r).unwrap();
        }
        assert_eq!(s.user_list(), vec!["a", "b", "m", "z"]);
        assert_eq!(s.role_list(), vec!["a", "b", "m", "z"]);
        assert_eq!(
            s.user_get("b"),
            Ok(vec!["a".to_owned(), "m".to_owned(), "z".to_owned()])
        );
    }

    #[test]
    fn every_successful_mutation_bumps_once() {
        let mut s = AuthStore::new();
        assert_ok(&mut s, 1, |s| s.user_add("root", hash("h"), false));
        assert_ok(&mut s, 1, |s| s.role_add("r"));
        assert_ok(&mut s, 1, |s| s.user_grant_role("root", "root"));
        assert_ok(&mut s, 1, |s| s.user_grant_role("root", "r"));
        assert_ok(&mut s, 1, |s| {
            s.role_grant_permission("r", perm(PermType::Read, b"a", b""))
        });
        assert_ok(&mut s, 1, |s| s.role_revoke_permission("r", b"a", b""));
        assert_ok(&mut s, 1, |s| s.user_change_password("root", hash("h2")));
        assert_ok(&mut s, 1, |s| s.user_revoke_role("root", "r"));
        assert_ok(&mut s, 1, |s| s.role_delete("r"));
        assert_ok(&mut s, 1, |s| s.user_add("x", hash("h"), false));
        assert_ok(&mut s, 1, |s| s.user_delete("x"));
        assert_eq!(s.revision(), AuthRevision(12));
    }

    // ---- permission checks ------------------------------------------------

    use PermType::{Read, ReadWrite, Write};

    #[test]
    fn single_key_grant() {
        let s = with_grants(&[perm(Read, b"foo", b"")]);
        assert!(s.is_permitted("u", b"foo", b"", Read));
        assert!(!s.is_permitted("u", b"fo", b"", Read));
        assert!(!s.is_permitted("u", b"foo\x00", b"", Read));
        assert!(!s.is_permitted("u", b"foob", b"", Read));
        // The range holding exactly "foo" is permitted; one key more is not.
        assert!(s.is_permitted("u", b"foo", b"foo\x00", Read));
        assert!(!s.is_permitted("u", b"foo", b"foo\x00\x00", Read));
        assert!(!s.is_permitted("u", b"foo", b"fop", Read));
    }

    #[test]
    fn prefix_range_grant() {
        // `--prefix foo` is [foo, fop).
        let s = with_grants(&[perm(Read, b"foo", b"fop")]);
        assert!(s.is_permitted("u", b"foo", b"", Read));
        assert!(s.is_permitted("u", b"foo/bar", b"", Read));
        assert!(s.is_permitted("u", b"foo\xff\xff", b"", Read));
        assert!(s.is_permitted("u", b"foo", b"fop", Read));
        assert!(s.is_permitted("u", b"foo/", b"foo0", Read));
        assert!(!s.is_permitted("u", b"fop", b"", Read));
        assert!(!s.is_permitted("u", b"fon", b"", Read));
        assert!(!s.is_permitted("u", b"foo", b"fop\x00", Read));
        assert!(!s.is_permitted("u", b"fo", b"fop", Read));
        assert!(!s.is_permitted("u", b"foo", &[0], Read));
    }

    #[test]
    fn from_key_grants_and_requests() {
        let s = with_grants(&[perm(Read, b"m", &[0])]);
        assert!(s.is_permitted("u", b"m", b"", Read));
        assert!(s.is_permitted("u", b"\xff\xff\xff\xff", b"", Read));
        assert!(s.is_permitted("u", b"m", &[0], Read));
        assert!(s.is_permitted("u", b"n", &[0], Read));
        assert!(s.is_permitted("u", b"m", b"z", Read));
        assert!(!s.is_permitted("u", b"l", &[0], Read));
        assert!(!s.is_permitted("u", b"l\xff", b"", Read));

        // Every key: key [0] with range_end [0].
        let all = with_grants(&[perm(Read, &[0], &[0])]);
        assert!(all.is_permitted("u", &[0], &[0], Read));
        assert!(all.is_permitted("u", b"anything", &[0], Read));
        // A bounded grant never covers an unbounded request.
        let bounded = with_grants(&[perm(Read, &[0], b"\xff\xff\xff\xff\xff\xff")]);
        assert!(!bounded.is_permitted("u", b"a", &[0], Read));
        assert!(bounded.is_permitted("u", b"a", b"\xff", Read));
    }

    #[test]
    fn adjacent_grants_cover_a_request_across_them() {
        let s = with_grants(&[
            perm(Read, b"a", b"c"),
            perm(Read, b"c", b"e"),
            perm(Read, b"e", &[0]),
        ]);
        assert!(s.is_permitted("u", b"a", b"e", Read));
        assert!(s.is_permitted("u", b"b", b"d", Read));
        assert!(s.is_permitted("u", b"a", &[0], Read));
        assert!(!s.is_permitted("u", b"A", b"b", Read));

        // Single keys chain exactly: "a" then everything from "a\0".
        let chained = with_grants(&[perm(Read, b"a", b""), perm(Read, b"a\x00", b"b")]);
        assert!(chained.is_permitted("u", b"a", b"b", Read));
        let chained = with_grants(&[perm(Read, b"a", b"b"), perm(Read, b"b", b"")]);
        assert!(chained.is_permitted("u", b"a", b"b\x00", Read));
        assert!(!chained.is_permitted("u", b"a", b"b\x00\x00", Read));
    }

    #[test]
    fn overlapping_grants_cover() {
        let s = with_grants(&[
            perm(Read, b"a", b"d"),
            perm(Read, b"b", b"c"),
            perm(Read, b"c", b"f"),
        ]);
        assert!(s.is_permitted("u", b"a", b"f", Read));
        assert!(!s.is_permitted("u", b"a", b"f\x00", Read));
        // A grant nested inside another must not shrink the covered prefix.
        let nested = with_grants(&[
            perm(Read, b"a", b"z"),
            perm(Read, b"b", b"c"),
            perm(Read, b"b", b""),
        ]);
        assert!(nested.is_permitted("u", b"a", b"y", Read));
    }

    #[test]
    fn a_gap_anywhere_denies() {
        let s = with_grants(&[perm(Read, b"a", b"c"), perm(Read, b"d", b"f")]);
        assert!(!s.is_permitted("u", b"a", b"f", Read));
        assert!(!s.is_permitted("u", b"b", b"e", Read));
        assert!(!s.is_permitted("u", b"c", b"", Read));
        assert!(s.is_permitted("u", b"a", b"c", Read));
        assert!(s.is_permitted("u", b"d", b"f", Read));
        // A one-key gap: "c" is granted but "c\0" up to "d" is not.
        let s = with_grants(&[
            perm(Read, b"a", b"c"),
            perm(Read, b"c", b""),
            perm(Read, b"c\x00\x00", b"e"),
        ]);
        assert!(s.is_permitted("u", b"a", b"c\x00", Read));
        assert!(!s.is_permitted("u", b"a", b"e", Read));
        assert!(!s.is_permitted("u", b"c\x00", b"", Read));
    }

    #[test]
    fn read_write_and_readwrite_types() {
        let s = with_grants(&[
            perm(Read, b"r", b""),
            perm(Write, b"w", b""),
            perm(ReadWrite, b"x", b""),
        ]);
        assert!(s.is_permitted("u", b"r", b"", Read));
        assert!(!s.is_permitted("u", b"r", b"", Write));
        assert!(!s.is_permitted("u", b"r", b"", ReadWrite));
        assert!(!s.is_permitted("u", b"w", b"", Read));
        assert!(s.is_permitted("u", b"w", b"", Write));
        assert!(!s.is_permitted("u", b"w", b"", ReadWrite));
        assert!(s.is_permitted("u", b"x", b"", Read));
        assert!(s.is_permitted("u", b"x", b"", Write));
        assert!(s.is_permitted("u", b"x", b"", ReadWrite));
        // Coverage is per type: a read grant does not fill a write gap.
        let s = with_grants(&[
            perm(Write, b"a", b"b"),
            perm(Read, b"b", b"c"),
            perm(ReadWrite, b"c", b"d"),
        ]);
        assert!(!s.is_permitted("u", b"a", b"d", Write));
        assert!(!s.is_permitted("u", b"a", b"d", Read));
        assert!(s.is_permitted("u", b"b", b"d", Read));
        assert!(!s.is_permitted("u", b"b", b"d", ReadWrite));
        // Read and write grants from two roles together make read-write.
        let mut s = with_grants(&[perm(Read, b"a", b"c")]);
        s.role_grant_permission("r2", perm(Write, b"a", b"c"))
            .unwrap();
        assert!(s.is_permitted("u", b"a", b"c", ReadWrite));
        // Within one role the same range holds one type: the later grant
        // replaces the earlier, it does not add to it.
        let s = with_grants(&[perm(Read, b"a", b"c"), perm(Write, b"a", b"c")]);
        assert!(!s.is_permitted("u", b"a", b"c", ReadWrite));
        assert!(!s.is_permitted("u", b"a", b"c", Read));
        assert!(s.is_permitted("u", b"a", b"c", Write));
    }

    #[test]
    fn grants_union_across_roles_and_only_held_roles_count() {
        let mut s = enabled_store();
        s.role_grant_permission("r1", perm(Read, b"a", b"c"))
            .unwrap();
        s.role_grant_permission("r2", perm(Read, b"c", b"e"))
            .unwrap();
        s.role_add("r3").unwrap();
        s.role_grant_permission("r3", perm(Read, b"e", b"g"))
            .unwrap();
        assert!(s.is_permitted("u", b"a", b"e", Read));
        assert!(!s.is_permitted("u", b"a", b"g", Read));
        s.user_grant_role("u", "r3").unwrap();
        assert!(s.is_permitted("u", b"a", b"g", Read));
        // Revoking a role, deleting a role, and revoking a permission all
        // take effect immediately.
        s.user_revoke_role("u", "r3").unwrap();
        assert!(!s.is_permitted("u", b"e", b"", Read));
        s.role_delete("r2").unwrap();
        assert!(!s.is_permitted("u", b"c", b"", Read));
        s.role_revoke_permission("r1", b"a", b"c").unwrap();
        assert!(!s.is_permitted("u", b"a", b"", Read));
    }

    #[test]
    fn root_role_permits_everything() {
        let s = enabled_store();
        for want in [Read, Write, ReadWrite] {
            assert!(s.is_permitted("root", b"any", b"", want));
            assert!(s.is_permitted("root", &[0], &[0], want));
            assert!(s.is_permitted("root", b"", b"", want));
        }
        assert!(!s.is_permitted("u", b"any", b"", Read));
        let mut s = s;
        s.user_grant_role("u", "root").unwrap();
        assert!(s.is_permitted("u", &[0], &[0], Write));
    }

    #[test]
    fn auth_disabled_permits_everyone() {
        let mut s = enabled_store();
        assert!(!s.is_permitted("u", b"k", b"", Write));
        assert!(!s.is_permitted("nobody", b"k", b"", Write));
        s.auth_disable();
        assert!(s.is_permitted("u", b"k", b"", Write));
        assert!(s.is_permitted("nobody", &[0], &[0], ReadWrite));
        assert!(s.is_permitted("", b"k", b"", Read));
    }

    #[test]
    fn unknown_user_is_denied() {
        let s = with_grants(&[perm(ReadWrite, &[0], &[0])]);
        assert!(s.is_permitted("u", b"k", b"", Read));
        assert!(!s.is_permitted("ghost", b"k", b"", Read));
        assert!(!s.is_permitted("", b"k", b"", Read));
    }

    #[test]
    fn an_empty_request_is_judged_as_its_start_key() {
        // What etcd's interval tree answers for key >= range_end.
        let s = with_grants(&[perm(Read, b"c", b"")]);
        assert!(s.is_permitted("u", b"c", b"a", Read));
        assert!(s.is_permitted("u", b"c", b"c", Read));
        assert!(!s.is_permitted("u", b"d", b"a", Read));
        assert!(!s.is_permitted("u", b"b", b"b", Read));
    }

    #[test]
    fn is_admin_is_holding_root() {
        let mut s = enabled_store();
        assert!(s.is_admin("root"));
        assert!(!s.is_admin("u"));
        assert!(!s.is_admin("ghost"));
        s.auth_disable();
        // Still a question about roles, not about whether auth is on.
        assert!(s.is_admin("root"));
        assert!(!s.is_admin("u"));
    }

    // ---- snapshots --------------------------------------------------------

    #[test]
    fn snapshot_layout_is_pinned() {
        let mut s = AuthStore::new();
        s.user_add("root", hash("H"), false).unwrap();
        s.user_grant_role("root", "root").unwrap();
        s.role_add("r").unwrap();
        s.role_grant_permission("r", perm(ReadWrite, b"k", &[0]))
            .unwrap();
        s.auth_enable().unwrap();
        let mut want = vec![1u8, 1, 5, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(&[
            1, 4, b'r', b'o', b'o', b't', 1, b'H', 0, 1, 4, b'r', b'o', b'o', b't',
        ]);
        want.extend_from_slice(&[1, 1, b'r', 1, 2, 1, b'k', 1, 0]);
        assert_eq!(&s.snapshot()[..], &want[..]);
        assert_eq!(AuthStore::restore(&want), Ok(s));
    }

    #[test]
    fn restore_rejects_malformed_input() {
        let good = enabled_store().snapshot();
        assert_eq!(AuthStore::restore(&[]), Err(DecodeError::Truncated));
        assert_eq!(AuthStore::restore(&[2]), Err(DecodeError::BadVersion(2)));
        assert_eq!(AuthStore::restore(&[1, 2]), Err(DecodeError::BadTag(2)));
        for cut in 0..good.len() {
            assert!(
                AuthStore::restore(&good[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(
            AuthStore::restore(&long),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn huge_counts_are_rejected_before_allocating() {
        let mut data = vec![1u8, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        put_uvarint(&mut data, u64::MAX);
        assert_eq!(
            AuthStore::restore(&data),
            Err(DecodeError::BadLength(u64::MAX))
        );
        // A count that fits in memory but not in the input: 3 users in 11 bytes.
        let mut data = vec![1u8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3];
        data.extend_from_slice(&[0; 11]);
        assert_eq!(AuthStore::restore(&data), Err(DecodeError::BadLength(3)));
        // An overlong varint.
        let mut data = vec![1u8, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        data.extend_from_slice(&[0xff; 11]);
        assert_eq!(AuthStore::restore(&data), Err(DecodeError::BadVarint));
    }

    #[test]
    fn restore_rejects_states_this_code_never_produces() {
        /// (name, no_password, hash, roles) and (name, [(type, key, range_end)]).
        type UserImage<'a> = (&'a str, bool, &'a [u8], &'a [&'a str]);
        type RoleImage<'a> = (&'a str, &'a [(u8, &'a [u8], &'a [u8])]);
        /// Encodes fields as given, valid or not, bypassing the store.
        fn image(
            enabled: u8,
            rev: u64,
            users: &[UserImage<'_>],
            roles: &[RoleImage<'_>],
        ) -> Vec<u8> {
            let mut b = vec![1, enabled];
            b.extend_from_slice(&rev.to_le_bytes());
            put_uvarint(&mut b, users.len() as u64);
            for (name, no_pw, h, rs) in users {
                put_bytes(&mut b, name.as_bytes());
                put_bytes(&mut b, h);
                b.push(u8::from(*no_pw));
                put_uvarint(&mut b, rs.len() as u64);
                for r in *rs {
                    put_bytes(&mut b, r.as_bytes());
                }
            }
            put_uvarint(&mut b, roles.len() as u64);
            for (name, perms) in roles {
                put_bytes(&mut b, name.as_bytes());
                put_uvarint(&mut b, perms.len() as u64);
                for (t, k, e) in *perms {
                    b.push(*t);
                    put_bytes(&mut b, k);
                    put_bytes(&mut b, e);
                }
            }
            b
        }
        let ok = image(
            1,
            3,
            &[("root", false, b"h", &["root"])],
            &[("r", &[(0, b"a", b"")])],
        );
        assert!(AuthStore::restore(&ok).is_ok());

        let bad: Vec<(Vec<u8>, DecodeError)> = vec![
            (
                image(0, 0, &[], &[]),
                DecodeError::Invariant("revision is zero"),
            ),
            (
                image(1, 1, &[], &[]),
                DecodeError::Invariant("auth enabled without a root user holding the root role"),
            ),
            (
                image(1, 1, &[("root", false, b"", &[])], &[]),
                DecodeError::Invariant("auth enabled without a root user holding the root role"),
            ),
            (
                image(0, 1, &[("b", false, b"", &[]), ("a", false, b"", &[])], &[]),
                DecodeError::Invariant("user names not strictly ascending"),
            ),
            (
                image(0, 1, &[("a", false, b"", &[]), ("a", false, b"", &[])], &[]),
                DecodeError::Invariant("user names not strictly ascending"),
            ),
            (
                image(0, 1, &[("", false, b"", &[])], &[]),
                DecodeError::Invariant("empty user name"),
            ),
            (
                image(0, 1, &[("a", true, b"h", &[])], &[]),
                DecodeError::Invariant("no-password user has a password hash"),
            ),
            (
                image(0, 1, &[("a", false, b"", &["ghost"])], &[]),
                DecodeError::Invariant("user holds a role that does not exist"),
            ),
            (
                image(0, 1, &[("a", false, b"", &["r", "r"])], &[("r", &[])]),
                DecodeError::Invariant("user's roles not strictly ascending"),
            ),
            (
                image(0, 1, &[], &[("s", &[]), ("r", &[])]),
                DecodeError::Invariant("role names not strictly ascending"),
            ),
            (
                image(0, 1, &[], &[("", &[])]),
                DecodeError::Invariant("empty role name"),
            ),
            (
                image(0, 1, &[], &[("r", &[(3, b"a", b"")])]),
                DecodeError::BadTag(3),
            ),
            (
                image(0, 1, &[], &[("r", &[(0, b"b", b"a")])]),
                DecodeError::Invariant("permission with an invalid range"),
            ),
            (
                image(0, 1, &[], &[("r", &[(0, b"b", b""), (1, b"a", b"")])]),
                DecodeError::Invariant("permissions not strictly ascending by (key, range_end)"),
            ),
            (
                image(0, 1, &[], &[("r", &[(0, b"a", b""), (1, b"a", b"")])]),
                DecodeError::Invariant("permissions not strictly ascending by (key, range_end)"),
            ),
            (
                // The name "x" with its byte replaced by 0xff, never UTF-8.
                image(0, 1, &[("x", false, b"", &[])], &[])
                    .into_iter()
                    .map(|b| if b == b'x' { 0xff } else { b })
                    .collect(),
                DecodeError::BadUtf8,
            ),
            (image(2, 1, &[], &[]), DecodeError::BadTag(2)),
        ];
        for (data, want) in bad {
            assert_eq!(AuthStore::restore(&data), Err(want));
        }
    }

    // ---- property tests ---------------------------------------------------

    const ALPHABET: [u8; 4] = [b'a', b'b', 0x00, 0xff];

    fn word(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
        vec(proptest::sample::select(ALPHABET.to_vec()), 0..=max_len)
    }

    fn range_end() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![Just(vec![]), Just(vec![0]), word(3)]
    }

    fn perm_type() -> impl Strategy<Value = PermType> {
        prop_oneof![Just(Read), Just(Write), Just(ReadWrite)]
    }

    /// Every key of length <= 3 over the alphabet, plus one key above every
    /// finite range end the strategies can produce, standing for "the
    /// unbounded part". With request and grant keys of length <= 2 and range
    /// ends of length <= 3, every gap in a union of grants begins at a range
    /// end, a grant key, or a single key followed by 0x00, so it contains a
    /// key of this list: checking these keys decides coverage exactly.
    fn universe() -> Vec<Vec<u8>> {
        let mut keys = vec![vec![]];
        let mut frontier = vec![vec![]];
        for _ in 0..3 {
            let mut next = Vec::new();
            for k in &frontier {
                for b in ALPHABET {
                    let mut k2: Vec<u8> = k.clone();
                    k2.push(b);
                    next.push(k2);
                }
            }
            keys.extend(next.iter().cloned());
            frontier = next;
        }
        keys.push(vec![0xff; 4]);
        keys
    }

    /// The naive reading of a grant: which keys it holds.
    fn model_grant_holds(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
        if range_end.is_empty() {
            k == key
        } else if range_end == [0] {
            k >= key
        } else {
            key <= k && k < range_end
        }
    }

    /// The naive reading of a request, with etcd's empty-range rule.
    fn model_request_holds(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
        if !range_end.is_empty() && range_end != [0] && range_end <= key {
            k == key
        } else {
            model_grant_holds(key, range_end, k)
        }
    }

    #[derive(Clone, Debug)]
    enum PermOp {
        Grant {
            role: usize,
            perm_type: PermType,
            key: Vec<u8>,
            range_end: Vec<u8>,
        },
        Revoke {
            role: usize,
            key: Vec<u8>,
            range_end: Vec<u8>,
        },
        GrantRole(usize),
        RevokeRole(usize),
    }

    fn perm_op() -> impl Strategy<Value = PermOp> {
        prop_oneof![
            6 => (0..3usize, perm_type(), word(2), range_end())
                .prop_map(|(role, perm_type, key, range_end)| PermOp::Grant { role, perm_type, key, range_end }),
            2 => (0..3usize, word(2), range_end()).prop_map(|(role, key, range_end)| PermOp::Revoke { role, key, range_end }),
            1 => (0..3usize).prop_map(PermOp::GrantRole),
            1 => (0..3usize).prop_map(PermOp::RevokeRole),
        ]
    }

    const ROLES: [&str; 3] = ["r0", "r1", "r2"];

    #[derive(Clone, Debug)]
    enum StoreOp {
        UserAdd(&'static str, u8, bool),
        UserDelete(&'static str),
        ChangePassword(&'static str, u8),
        GrantRole(&'static str, &'static str),
        RevokeRole(&'static str, &'static str),
        RoleAdd(&'static str),
        RoleDelete(&'static str),
        GrantPermission(&'static str, PermType, Vec<u8>, Vec<u8>),
        RevokePermission(&'static str, Vec<u8>, Vec<u8>),
        Enable,
        Disable,
    }

    fn name() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(vec!["", "root", "a", "b"])
    }

    fn store_op() -> impl Strategy<Value = StoreOp> {
        prop_oneof![
            (name(), any::<u8>(), any::<bool>()).prop_map(|(n, h, np)| StoreOp::UserAdd(n, h, np)),
            name().prop_map(StoreOp::UserDelete),
            (name(), any::<u8>()).prop_map(|(n, h)| StoreOp::ChangePassword(n, h)),
            (name(), name()).prop_map(|(u, r)| StoreOp::GrantRole(u, r)),
            (name(), name()).prop_map(|(u, r)| StoreOp::RevokeRole(u, r)),
            name().prop_map(StoreOp::RoleAdd),
            name().prop_map(StoreOp::RoleDelete),
            (name(), perm_type(), word(2), range_end())
                .prop_map(|(r, t, k, e)| StoreOp::GrantPermission(r, t, k, e)),
            (name(), word(2), range_end()).prop_map(|(r, k, e)| StoreOp::RevokePermission(r, k, e)),
            Just(StoreOp::Enable),
            Just(StoreOp::Disable),
        ]
    }

    /// Applies `op`; returns its result and the revision bump etcd's rules
    /// predict for it from the state before, should it succeed.
    fn apply(s: &mut AuthStore, op: &StoreOp) -> (Result<(), AuthError>, u64) {
        let before = s.clone();
        match op {
            StoreOp::UserAdd(n, h, np) => (s.user_add(n, Bytes::from(vec![*h]), *np), 1),
            StoreOp::UserDelete(n) => (s.user_delete(n), 1),
            StoreOp::ChangePassword(n, h) => (s.user_change_password(n, Bytes::from(vec![*h])), 1),
            StoreOp::GrantRole(u, r) => {
                let held = before.user(u).is_some_and(|x| x.roles.contains(*r));
                (s.user_grant_role(u, r), u64::from(!held))
            }
            StoreOp::RevokeRole(u, r) => (s.user_revoke_role(u, r), 1),
            StoreOp::RoleAdd(n) => (s.role_add(n), 1),
            StoreOp::RoleDelete(n) => (s.role_delete(n), 1),
            StoreOp::GrantPermission(r, t, k, e) => (s.role_grant_permission(r, perm(*t, k, e)), 1),
            StoreOp::RevokePermission(r, k, e) => (s.role_revoke_permission(r, k, e), 1),
            StoreOp::Enable => (s.auth_enable(), 0),
            StoreOp::Disable => {
                s.auth_disable();
                (Ok(()), u64::from(before.is_enabled()))
            }
        }
    }

    /// A store reached by random operations, for snapshot tests.
    fn arbitrary_store() -> impl Strategy<Value = AuthStore> {
        vec(store_op(), 0..40).prop_map(|ops| {
            let mut s = AuthStore::new();
            for op in &ops {
                // Failures are part of the exploration; they change nothing.
                let _ = apply(&mut s, op);
            }
            s
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/auth.txt")))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn is_permitted_matches_naive_model(
            ops in vec(perm_op(), 0..16),
            requests in vec((word(2), range_end(), perm_type()), 1..24),
        ) {
            let mut s = AuthStore::new();
            s.user_add("root", hash("h"), false).unwrap();
            s.user_grant_role("root", "root").unwrap();
            s.user_add("u", hash("h"), false).unwrap();
            for r in ROLES {
                s.role_add(r).unwrap();
            }
            s.user_grant_role("u", "r0").unwrap();
            s.user_grant_role("u", "r1").unwrap();
            s.auth_enable().unwrap();

            // The model: per role, (key, range_end) -> type; and held roles.
            let mut grants: BTreeMap<(usize, Vec<u8>, Vec<u8>), PermType> = BTreeMap::new();
            let mut held: BTreeSet<usize> = [0, 1].into_iter().collect();
            for op in &ops {
                match op {
                    PermOp::Grant { role, perm_type, key, range_end } => {
                        let valid = !key.is_empty()
                            && (range_end.is_empty() || range_end == &[0] || key < range_end);
                        let got = s.role_grant_permission(ROLES[*role], perm(*perm_type, key, range_end));
                        prop_assert_eq!(got.is_ok(), valid, "grant {:?}", op);
                        if valid {
                            grants.insert((*role, key.clone(), range_end.clone()), *perm_type);
                        }
                    }
                    PermOp::Revoke { role, key, range_end } => {
                        let had = grants.remove(&(*role, key.clone(), range_end.clone())).is_some();
                        let got = s.role_revoke_permission(ROLES[*role], key, range_end);
                        prop_assert_eq!(got.is_ok(), had, "revoke {:?}", op);
                    }
                    PermOp::GrantRole(role) => {
                        held.insert(*role);
                        prop_assert!(s.user_grant_role("u", ROLES[*role]).is_ok());
                    }
                    PermOp::RevokeRole(role) => {
                        let had = held.remove(role);
                        prop_assert_eq!(s.user_revoke_role("u", ROLES[*role]).is_ok(), had);
                    }
                }
            }

            let universe = universe();
            let model_permits = |key: &[u8], range_end: &[u8], access: PermType| {
                universe.iter().filter(|k| model_request_holds(key, range_end, k)).all(|k| {
                    grants.iter().any(|((role, gk, ge), t)| {
                        held.contains(role)
                            && (*t == access || *t == ReadWrite)
                            && model_grant_holds(gk, ge, k)
                    })
                })
            };
            for (key, range_end, want) in &requests {
                let model = match want {
                    Read => model_permits(key, range_end, Read),
                    Write => model_permits(key, range_end, Write),
                    ReadWrite => model_permits(key, range_end, Read) && model_permits(key, range_end, Write),
                };
                prop_assert_eq!(
                    s.is_permitted("u", key, range_end, *want), model,
                    "request {:?}..{:?} {:?} with grants {:?} held {:?}", key, range_end, want, grants, held
                );
                prop_assert!(s.is_permitted("root", key, range_end, *want));
                prop_assert!(!s.is_permitted("ghost", key, range_end, *want));
            }
        }

        #[test]
        fn random_operations_keep_invariants_and_revision_rules(ops in vec(store_op(), 0..60)) {
            let mut s = AuthStore::new();
            for op in &ops {
                let before = s.clone();
                let (result, bump) = apply(&mut s, op);
                match result {
                    Ok(()) => prop_assert_eq!(s.revision().0, before.revision().0 + bump, "after {:?}", op),
                    Err(_) => prop_assert_eq!(&s, &before, "failed {:?} changed the store", op),
                }
                prop_assert_eq!(s.check_invariants(), Ok(()), "after {:?}", op);
                // While enabled, nothing can take admin rights from root.
                if s.is_enabled() {
                    prop_assert!(s.is_admin(ROOT_USER));
                }
            }
        }

        #[test]
        fn snapshot_round_trips(s in arbitrary_store()) {
            let image = s.snapshot();
            let restored = AuthStore::restore(&image);
            prop_assert_eq!(restored.as_ref(), Ok(&s));
            prop_assert_eq!(restored.map(|r| r.snapshot()), Ok(image));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in vec(any::<u8>(), 0..256)) {
            // Mostly rejected at the version byte; the next test goes deeper.
            if let Ok(s) = AuthStore::restore(&data) {
                prop_assert_eq!(&s.snapshot()[..], &data[..]);
            }
        }

        #[test]
        fn decoding_damaged_snapshots_never_panics(
            s in arbitrary_store(),
            edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut data = s.snapshot().to_vec();
            for (at, byte) in &edits {
                let i = at.index(data.len());
                data[i] = *byte;
            }
            let truncated = &data[..cut.index(data.len() + 1)];
            for input in [&data[..], truncated] {
                // Whatever decodes is canonical: it re-encodes to its input.
                if let Ok(r) = AuthStore::restore(input) {
                    prop_assert_eq!(&r.snapshot()[..], input);
                }
            }
        }
    }
}
