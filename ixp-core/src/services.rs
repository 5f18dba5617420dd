//! The service registry: plugins offer values by name, others look them up by name or
//! by type.
//!
//! ```
//! use std::sync::Arc;
//! use ixp_core::services::ServiceRegistry;
//!
//! #[derive(Debug)]
//! struct Clock { offset: i64 }
//!
//! let registry = ServiceRegistry::new();
//! registry.register("clock", Clock { offset: 3 }).unwrap();
//! let by_name: Arc<Clock> = registry.get("clock").unwrap();
//! let by_type: Arc<Clock> = registry.get_typed().unwrap();
//! assert_eq!(by_name.offset + by_type.offset, 6);
//!
//! let err = registry.get::<Clock>("calendar").unwrap_err();
//! assert_eq!(err.to_string(), "service `calendar` is not registered, and no compiled-in plugin provides it");
//! ```

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};

/// Errors of the service registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No service of that name.
    #[error("service `{name}` is not registered, {}", provider_hint(.provider))]
    NotFound {
        /// The name asked for.
        name: String,
        /// The compiled-in plugin that provides it, if any.
        provider: Option<String>,
    },
    /// No service of that type (or more than one).
    #[error("no single service of type `{type_name}`: {reason}")]
    TypeNotFound {
        /// The type asked for.
        type_name: &'static str,
        /// None, or the names of the several services of that type.
        reason: String,
    },
    /// The service exists with another type.
    #[error("service `{name}` is a `{actual}`, not a `{expected}`")]
    WrongType {
        /// The name.
        name: String,
        /// The type asked for.
        expected: &'static str,
        /// The registered type.
        actual: &'static str,
    },
    /// The name is taken.
    #[error("service `{name}` is already registered{}", owner_hint(.owner))]
    AlreadyRegistered {
        /// The name.
        name: String,
        /// The plugin that registered it, if any.
        owner: Option<String>,
    },
}

fn provider_hint(provider: &Option<String>) -> String {
    match provider {
        Some(p) => format!(
            "it is provided by plugin `{p}`: enable it and declare it as a dependency so that it starts first"
        ),
        None => "and no compiled-in plugin provides it".to_owned(),
    }
}

fn owner_hint(owner: &Option<String>) -> String {
    match owner {
        Some(o) => format!(" (by plugin `{o}`)"),
        None => String::new(),
    }
}

type Factory = Arc<dyn Fn() -> Box<dyn Any + Send> + Send + Sync>;
type AnyService = Arc<dyn Any + Send + Sync>;

#[derive(Clone)]
struct Entry {
    value: AnyService,
    type_id: TypeId,
    type_name: &'static str,
    owner: Option<Arc<str>>,
}

#[derive(Clone)]
struct FactoryEntry {
    make: Factory,
    type_id: TypeId,
    type_name: &'static str,
    owner: Option<Arc<str>>,
}

/// A hash map with a fast hasher: look-ups are on every request path.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct Inner {
    services: FastMap<String, Entry>,
    /// What [`ServiceRegistry::get`] and [`ServiceRegistry::get_typed`] read without
    /// taking the lock; built on demand, dropped on every change of `services`.
    snapshot: OnceLock<Arc<Snapshot>>,
    /// Look-ups that found no snapshot since the last change (see [`Inner::snapshot`]).
    misses_since_change: AtomicUsize,
    /// The services of each type (name and value), so that `get_typed` does not scan
    /// every service. Kept in step with `services`.
    by_type: FastMap<TypeId, Vec<(String, AnyService)>>,
    factories: HashMap<String, FactoryEntry>,
    providers: HashMap<String, String>,
}

impl Inner {
    /// The snapshot of `services`, built if enough look-ups have missed it since the
    /// last change to pay for building it: a registry changing between look-ups (while
    /// plugins start) does not rebuild it on each.
    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        if let Some(snapshot) = self.snapshot.get() {
            return Some(snapshot.clone());
        }
        let misses = self.misses_since_change.fetch_add(1, Ordering::Relaxed);
        if misses < self.services.len() / 8 {
            return None;
        }
        Some(
            self.snapshot
                .get_or_init(|| Arc::new(Snapshot::of(self)))
                .clone(),
        )
    }

    /// [`ServiceRegistry::get`] under the lock, with its errors.
    fn named<T: Send + Sync + 'static>(&self, name: &str) -> Result<Arc<T>, ServiceError> {
        let Some(entry) = self.services.get(name) else {
            return Err(ServiceError::NotFound {
                name: name.to_owned(),
                provider: self.providers.get(name).cloned(),
            });
        };
        entry
            .value
            .clone()
            .downcast::<T>()
            .map_err(|_| ServiceError::WrongType {
                name: name.to_owned(),
                expected: std::any::type_name::<T>(),
                actual: entry.type_name,
            })
    }

    /// [`ServiceRegistry::get_typed`] under the lock, with its errors.
    fn typed<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, ServiceError> {
        let found = self
            .by_type
            .get(&TypeId::of::<T>())
            .map_or(&[][..], Vec::as_slice);
        match found {
            [(_, value)] => value
                .clone()
                .downcast::<T>()
                .map_err(|_| ServiceError::TypeNotFound {
                    type_name: std::any::type_name::<T>(),
                    reason: "type mismatch".into(),
                }),
            [] => Err(ServiceError::TypeNotFound {
                type_name: std::any::type_name::<T>(),
                reason: "none is registered".into(),
            }),
            several => {
                let mut names: Vec<String> = several.iter().map(|(n, _)| n.clone()).collect();
                names.sort();
                Err(ServiceError::TypeNotFound {
                    type_name: std::any::type_name::<T>(),
                    reason: format!(
                        "several are registered ({}); look one up by name",
                        names.join(", ")
                    ),
                })
            }
        }
    }

    /// Removes `name` (of type `type_id`) from the type index.
    fn unindex(&mut self, name: &str, type_id: TypeId) {
        if let Some(of_type) = self.by_type.get_mut(&type_id) {
            of_type.retain(|(n, _)| n != name);
            if of_type.is_empty() {
                self.by_type.remove(&type_id);
            }
        }
    }
}

/// The service registry. Cheap to clone; clones share services.
///
/// The registry a plugin gets from its context is *scoped*: what the plugin registers
/// is recorded as its own, and the host unregisters it when the plugin stops.
#[derive(Clone)]
pub struct ServiceRegistry {
    shared: Arc<Shared>,
    owner: Option<Arc<str>>,
}

/// What the clones of a registry share.
struct Shared {
    /// Unique among the registries of the process, for [`LAST_SNAPSHOT`].
    id: u64,
    /// Counts the changes of `Inner::services`; changed only under the write lock.
    generation: AtomicU64,
    inner: RwLock<Inner>,
}

impl Default for ServiceRegistry {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            shared: Arc::new(Shared {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                generation: AtomicU64::new(0),
                inner: RwLock::default(),
            }),
            owner: None,
        }
    }
}

/// The services of a registry as they were at one generation, held weakly: a stale
/// snapshot left in some thread's [`LAST_SNAPSHOT`] keeps no unregistered service alive
/// (its `Drop` runs when the registry lets it go), only the `Arc` allocation of the
/// value, until that thread looks services up in another registry or generation.
struct Snapshot {
    by_name: FastMap<String, WeakService>,
    /// The types of exactly one service.
    by_type: FastMap<TypeId, WeakService>,
}

type WeakService = Weak<dyn Any + Send + Sync>;

impl Snapshot {
    fn of(inner: &Inner) -> Self {
        Self {
            by_name: inner
                .services
                .iter()
                .map(|(name, entry)| (name.clone(), Arc::downgrade(&entry.value)))
                .collect(),
            by_type: inner
                .by_type
                .iter()
                .filter_map(|(type_id, of_type)| match of_type.as_slice() {
                    [(_, value)] => Some((*type_id, Arc::downgrade(value))),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// A thread's last snapshot of a registry.
struct CachedSnapshot {
    registry: u64,
    generation: u64,
    snapshot: Arc<Snapshot>,
}

thread_local! {
    /// The snapshot this thread looked services up in last: a look-up whose registry
    /// and generation match reads it instead of taking the registry's lock (whose two
    /// atomic writes to one word shared by every thread would cost more than the rest
    /// of the look-up).
    static LAST_SNAPSHOT: RefCell<Option<CachedSnapshot>> = const { RefCell::new(None) };
}

impl fmt::Debug for ServiceRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRegistry")
            .field("owner", &self.owner)
            .field("services", &self.names())
            .finish()
    }
}

impl ServiceRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same registry, acting for `owner` (a plugin name: a `&str`, or an `Arc<str>` to share).
    pub fn scoped(&self, owner: impl Into<Arc<str>>) -> Self {
        Self {
            shared: self.shared.clone(),
            owner: Some(owner.into()),
        }
    }

    /// Records which plugin provides which service, to explain a missing service.
    pub fn set_providers(&self, providers: impl IntoIterator<Item = (String, String)>) {
        self.write().providers.extend(providers);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.shared.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.shared.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Called under the write lock after `services` changed: drops the snapshot and
    /// moves to the next generation, so that no thread reads the old snapshot again.
    fn changed(&self, inner: &mut Inner) {
        inner.snapshot = OnceLock::new();
        *inner.misses_since_change.get_mut() = 0;
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// Replaces `last` with the registry's current snapshot, or returns the read guard
    /// taken to look for it when there is none yet.
    #[cold]
    #[inline(never)]
    fn refresh(
        &self,
        last: &mut Option<CachedSnapshot>,
    ) -> Result<(), std::sync::RwLockReadGuard<'_, Inner>> {
        let inner = self.read();
        let Some(snapshot) = inner.snapshot() else {
            return Err(inner);
        };
        *last = Some(CachedSnapshot {
            registry: self.shared.id,
            // Read under the lock: the generation `snapshot` belongs to.
            generation: self.shared.generation.load(Ordering::Acquire),
            snapshot,
        });
        Ok(())
    }

    /// Looks a service up: `fast` in this thread's snapshot of the registry (refreshed
    /// first if the registry changed), else `locked` under the read lock: when there is
    /// no snapshot to read yet (then with the guard taken to look for one), `fast`
    /// found nothing (a look-up that fails, or raced a change), or the thread's locals
    /// are unavailable. No lock is held while `fast` runs: it may drop the last
    /// reference to a service, whose `Drop` may use the registry.
    fn look_up<T: Send + Sync + 'static>(
        &self,
        fast: impl FnOnce(&Snapshot) -> Option<&WeakService>,
        locked: impl FnOnce(&Inner) -> Result<Arc<T>, ServiceError>,
    ) -> Result<Arc<T>, ServiceError> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let outcome = LAST_SNAPSHOT.try_with(|last| {
            // Busy only if a service dropped during `fast` looked one up.
            let Ok(mut last) = last.try_borrow_mut() else {
                return Err(None);
            };
            let current = last.as_ref().is_some_and(|cached| {
                cached.registry == self.shared.id && cached.generation == generation
            });
            if !current {
                if let Err(inner) = self.refresh(&mut last) {
                    return Err(Some(inner));
                }
            }
            let weak = last.as_ref().and_then(|cached| fast(&cached.snapshot));
            upgrade::<T>(weak).ok_or(None)
        });
        match outcome {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(Some(inner))) => locked(&inner),
            Ok(Err(None)) | Err(_) => locked(&self.read()),
        }
    }

    /// Registers `value` under `name`.
    pub fn register<T: Send + Sync + 'static>(
        &self,
        name: &str,
        value: T,
    ) -> Result<(), ServiceError> {
        self.register_arc(name, Arc::new(value))
    }

    /// Registers a value that is already shared.
    pub fn register_arc<T: Send + Sync + 'static>(
        &self,
        name: &str,
        value: Arc<T>,
    ) -> Result<(), ServiceError> {
        self.insert(name, value, false)
    }

    /// [`register_arc`](Self::register_arc) for a plugin's `start`, of a service it
    /// registered in `initialize`: a name this registry's owner holds already is left
    /// as it is. A restart removes the plugin's services before its hook (by default
    /// `stop`, then `start`), so the service must be registered again there. A name
    /// another owner holds is still [`ServiceError::AlreadyRegistered`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use ixp_core::ServiceRegistry;
    ///
    /// let registry = ServiceRegistry::new();
    /// let mine = registry.scoped("clock-plugin");
    /// let clock = Arc::new(42_u64);
    /// mine.register_arc("clock", clock.clone())?; // in `initialize`
    /// mine.register_arc_again("clock", clock.clone())?; // in `start`: kept as it is
    /// registry.remove_owner("clock-plugin"); // what a restart does first
    /// mine.register_arc_again("clock", clock.clone())?; // in `start`: registered again
    /// assert_eq!(*registry.get::<u64>("clock")?, 42);
    /// assert!(registry.scoped("other").register_arc_again("clock", clock).is_err());
    /// # Ok::<(), ixp_core::ServiceError>(())
    /// ```
    pub fn register_arc_again<T: Send + Sync + 'static>(
        &self,
        name: &str,
        value: Arc<T>,
    ) -> Result<(), ServiceError> {
        self.insert(name, value, true)
    }

    /// Registers `value` under `name`; a name registered already is an error, unless
    /// `keep_own` and this registry's owner holds it (then nothing changes).
    fn insert<T: Send + Sync + 'static>(
        &self,
        name: &str,
        value: Arc<T>,
        keep_own: bool,
    ) -> Result<(), ServiceError> {
        let mut inner = self.write();
        if let Some(existing) = inner.services.get(name) {
            if keep_own && existing.owner == self.owner {
                return Ok(());
            }
            return Err(ServiceError::AlreadyRegistered {
                name: name.to_owned(),
                owner: existing.owner.as_deref().map(str::to_owned),
            });
        }
        inner
            .by_type
            .entry(TypeId::of::<T>())
            .or_default()
            .push((name.to_owned(), value.clone()));
        inner.services.insert(
            name.to_owned(),
            Entry {
                value,
                type_id: TypeId::of::<T>(),
                type_name: std::any::type_name::<T>(),
                owner: self.owner.clone(),
            },
        );
        self.changed(&mut inner);
        tracing::debug!(
            service = name,
            plugin = self.owner.as_deref().unwrap_or("-"),
            "service registered"
        );
        Ok(())
    }

    /// The service `name` as a `T`.
    pub fn get<T: Send + Sync + 'static>(&self, name: &str) -> Result<Arc<T>, ServiceError> {
        self.look_up(
            |snapshot| snapshot.by_name.get(name),
            |inner| inner.named(name),
        )
    }

    /// The one service of type `T`, whatever its name.
    pub fn get_typed<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, ServiceError> {
        self.look_up(
            |snapshot| snapshot.by_type.get(&TypeId::of::<T>()),
            Inner::typed,
        )
    }

    /// Whether a service (or factory) of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        let inner = self.read();
        inner.services.contains_key(name) || inner.factories.contains_key(name)
    }

    /// Removes the service `name`; returns whether it existed.
    ///
    /// The registry's last reference to the value is dropped after the lock is
    /// released, so a service whose `Drop` uses the registry does not deadlock it.
    pub fn unregister(&self, name: &str) -> bool {
        let mut inner = self.write();
        let service = inner.services.remove(name);
        if let Some(entry) = &service {
            inner.unindex(name, entry.type_id);
            self.changed(&mut inner);
        }
        let factory = inner.factories.remove(name);
        drop(inner);
        service.is_some() | factory.is_some()
    }

    /// Registers a factory: [`create_instance`](Self::create_instance) calls it for a
    /// new value each time.
    pub fn register_factory<T, F>(&self, name: &str, factory: F) -> Result<(), ServiceError>
    where
        T: Send + 'static,
        F: Fn() -> T + Send + Sync + 'static,
    {
        let mut inner = self.write();
        if let Some(existing) = inner.factories.get(name) {
            return Err(ServiceError::AlreadyRegistered {
                name: name.to_owned(),
                owner: existing.owner.as_deref().map(str::to_owned),
            });
        }
        inner.factories.insert(
            name.to_owned(),
            FactoryEntry {
                make: Arc::new(move || Box::new(factory())),
                type_id: TypeId::of::<T>(),
                type_name: std::any::type_name::<T>(),
                owner: self.owner.clone(),
            },
        );
        Ok(())
    }

    /// A new value from the factory `name`.
    pub fn create_instance<T: Send + 'static>(&self, name: &str) -> Result<T, ServiceError> {
        let entry = {
            let inner = self.read();
            match inner.factories.get(name) {
                Some(entry) => entry.clone(),
                None => {
                    return Err(ServiceError::NotFound {
                        name: name.to_owned(),
                        provider: inner.providers.get(name).cloned(),
                    })
                }
            }
        };
        if entry.type_id != TypeId::of::<T>() {
            return Err(ServiceError::WrongType {
                name: name.to_owned(),
                expected: std::any::type_name::<T>(),
                actual: entry.type_name,
            });
        }
        (entry.make)()
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| ServiceError::WrongType {
                name: name.to_owned(),
                expected: std::any::type_name::<T>(),
                actual: entry.type_name,
            })
    }

    /// The names of every service and factory, sorted.
    pub fn names(&self) -> Vec<String> {
        let inner = self.read();
        let mut names: Vec<String> = inner
            .services
            .keys()
            .chain(inner.factories.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The names registered by `owner`, sorted.
    pub fn names_owned_by(&self, owner: &str) -> Vec<String> {
        let inner = self.read();
        let mut names: Vec<String> = inner
            .services
            .iter()
            .filter(|(_, e)| e.owner.as_deref() == Some(owner))
            .map(|(n, _)| n.clone())
            .chain(
                inner
                    .factories
                    .iter()
                    .filter(|(_, e)| e.owner.as_deref() == Some(owner))
                    .map(|(n, _)| n.clone()),
            )
            .collect();
        names.sort();
        names
    }

    /// Unregisters everything `owner` registered; returns the names removed.
    ///
    /// As with [`unregister`](Self::unregister), the values are dropped after the
    /// lock is released.
    pub fn remove_owner(&self, owner: &str) -> Vec<String> {
        let owned = |entry_owner: &Option<Arc<str>>| entry_owner.as_deref() == Some(owner);
        let mut inner = self.write();
        let services = take_where(&mut inner.services, |entry| owned(&entry.owner));
        for (name, entry) in &services {
            inner.unindex(name, entry.type_id);
        }
        if !services.is_empty() {
            self.changed(&mut inner);
        }
        let factories = take_where(&mut inner.factories, |entry| owned(&entry.owner));
        drop(inner);
        let mut removed: Vec<String> = services
            .into_iter()
            .map(|(name, _)| name)
            .chain(factories.into_iter().map(|(name, _)| name))
            .collect();
        removed.sort();
        removed
    }
}

/// The service behind `weak` as a `T`, if it is still registered and a `T`.
///
/// Not inlined, on measurement: `downcast` compares the `TypeId` that the virtual
/// `type_id` call has just written to the stack in two 8-byte stores, and inlined
/// into `get` the compiler read it back with one 16-byte load, which cannot be
/// forwarded from those stores: the stall was the largest part of a named look-up
/// (`perf annotate`: 38% of its samples on that load; `services/lookup/get_named`
/// 29-35 ns, against 16-20 ns as a function of its own, and `get_typed` 10-14 against
/// 11-12 ns; docs/performance.md).
#[inline(never)]
fn upgrade<T: Send + Sync + 'static>(weak: Option<&WeakService>) -> Option<Arc<T>> {
    weak?.upgrade()?.downcast::<T>().ok()
}

/// Removes the entries of `map` that `pick` picks, and returns them.
fn take_where<V, S: std::hash::BuildHasher>(
    map: &mut HashMap<String, V, S>,
    pick: impl Fn(&V) -> bool,
) -> Vec<(String, V)> {
    let names: Vec<String> = (map.iter())
        .filter(|(_, value)| pick(value))
        .map(|(name, _)| name.clone())
        .collect();
    (names.into_iter())
        .filter_map(|name| map.remove(&name).map(|value| (name, value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Clock(u64);

    #[test]
    fn typed_lookup_follows_register_unregister_and_remove_owner() {
        let registry = ServiceRegistry::new();
        let plugin = registry.scoped("clock-plugin");
        plugin.register("a", Clock(1)).expect("free name");
        registry.register("b", Clock(2)).expect("free name");
        registry.register("n", 7u32).expect("free name");
        let err = registry.get_typed::<Clock>().expect_err("two clocks");
        assert!(
            err.to_string().contains("several are registered (a, b)"),
            "{err}"
        );
        assert!(registry.unregister("b"));
        assert_eq!(registry.get_typed::<Clock>().expect("one clock").0, 1);
        assert_eq!(*registry.get_typed::<u32>().expect("one u32"), 7);
        assert_eq!(registry.remove_owner("clock-plugin"), vec!["a".to_owned()]);
        let err = registry.get_typed::<Clock>().expect_err("no clock");
        assert!(err.to_string().contains("none is registered"), "{err}");
        registry.register("a", Clock(3)).expect("name free again");
        assert_eq!(registry.get_typed::<Clock>().expect("one clock").0, 3);
    }

    #[test]
    fn lookups_follow_every_change_on_every_thread() {
        let registry = ServiceRegistry::new();
        registry.register("clock", Clock(1)).expect("free name");
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let registry = registry.clone();
                scope.spawn(move || {
                    assert_eq!(registry.get::<Clock>("clock").expect("registered").0, 1);
                });
            }
        });
        assert_eq!(registry.get::<Clock>("clock").expect("registered").0, 1);
        assert!(registry.unregister("clock"));
        let err = registry.get::<Clock>("clock").expect_err("unregistered");
        assert!(err.to_string().contains("not registered"), "{err}");
        registry.register("clock", Clock(2)).expect("free again");
        assert_eq!(registry.get::<Clock>("clock").expect("registered").0, 2);
        assert_eq!(registry.get_typed::<Clock>().expect("one clock").0, 2);
        registry.register("other", Clock(3)).expect("free name");
        assert!(registry.get_typed::<Clock>().is_err(), "two clocks now");
        let err = registry.get::<u32>("clock").expect_err("a Clock");
        assert!(err.to_string().contains("is a `"), "{err}");
    }

    #[test]
    fn a_thread_sees_changes_made_by_another_after_its_own_lookups() {
        let registry = ServiceRegistry::new();
        let kept = Arc::new(7u64);
        registry.register("a", Clock(1)).expect("free name");
        registry
            .register_arc("kept", kept.clone())
            .expect("free name");
        let on_another_thread = |change: &(dyn Fn() + Sync)| {
            std::thread::scope(|scope| scope.spawn(change).join().expect("changed"));
        };
        // Warm this thread's snapshot: one clock, `kept` alive.
        assert_eq!(registry.get_typed::<Clock>().expect("one clock").0, 1);
        assert_eq!(*registry.get::<u64>("kept").expect("registered"), 7);

        on_another_thread(&|| registry.register("b", Clock(2)).expect("free name"));
        let err = registry.get_typed::<Clock>().expect_err("two clocks now");
        assert!(err.to_string().contains("several are registered (a, b)"));
        assert_eq!(*registry.get::<u64>("kept").expect("registered"), 7);

        on_another_thread(&|| assert!(registry.unregister("kept")));
        // Still alive here, but no longer registered.
        assert!(registry.get::<u64>("kept").is_err());
        assert_eq!(*kept, 7);
    }

    #[test]
    fn an_unregistered_service_alive_elsewhere_is_not_found() {
        let registry = ServiceRegistry::new();
        let kept = Arc::new(7u64);
        for _ in 0..2 {
            registry
                .register_arc("kept", kept.clone())
                .expect("free name");
            assert_eq!(*registry.get_typed::<u64>().expect("one u64"), 7);
            assert_eq!(*registry.get::<u64>("kept").expect("registered"), 7);
            assert!(registry.unregister("kept"));
            assert!(registry.get::<u64>("kept").is_err());
            assert!(registry.get_typed::<u64>().is_err());
        }
    }

    #[test]
    fn two_registries_looked_up_in_turn_answer_for_themselves() {
        let (a, b) = (ServiceRegistry::new(), ServiceRegistry::new());
        a.register("clock", Clock(1)).expect("free name");
        b.register("clock", Clock(2)).expect("free name");
        for _ in 0..3 {
            assert_eq!(a.get::<Clock>("clock").expect("in a").0, 1);
            assert_eq!(b.get::<Clock>("clock").expect("in b").0, 2);
            assert_eq!(b.scoped("p").get_typed::<Clock>().expect("in b").0, 2);
        }
    }

    #[test]
    fn a_thread_that_looked_a_service_up_does_not_keep_it_alive() {
        let registry = ServiceRegistry::new();
        let clock = Arc::new(Clock(1));
        registry
            .register_arc("clock", clock.clone())
            .expect("free name");
        let plugin = registry.scoped("p");
        plugin.register("owned", Clock(2)).expect("free name");
        std::thread::scope(|scope| {
            scope.spawn(|| {
                registry.get::<Clock>("clock").expect("registered");
                registry.get::<Clock>("owned").expect("registered");
                assert!(registry.unregister("clock"));
                assert_eq!(Arc::strong_count(&clock), 1, "only the test holds it");
            });
        });
        assert_eq!(registry.remove_owner("p"), ["owned"]);
        assert!(registry.get::<Clock>("owned").is_err());
    }

    /// Looks a service up when dropped.
    struct LooksUpOnDrop(ServiceRegistry);

    impl Drop for LooksUpOnDrop {
        fn drop(&mut self) {
            assert!(self.0.get::<Clock>("clock").is_ok());
            assert!(!self.0.contains("dropping"));
        }
    }

    #[test]
    fn a_service_may_use_the_registry_while_it_is_dropped() {
        let registry = ServiceRegistry::new();
        registry.register("clock", Clock(1)).expect("free name");
        registry
            .register("dropping", LooksUpOnDrop(registry.clone()))
            .expect("free name");
        assert!(registry.unregister("dropping"));
        registry
            .scoped("p")
            .register("dropping", LooksUpOnDrop(registry.clone()))
            .expect("free again");
        assert_eq!(registry.remove_owner("p"), ["dropping"]);
    }

    #[test]
    fn the_snapshot_is_built_once_enough_lookups_have_missed_it() {
        let registry = ServiceRegistry::new();
        for i in 0..80 {
            registry.register(&format!("s{i}"), Clock(i)).expect("free");
        }
        let built = || registry.read().snapshot.get().is_some();
        for _ in 0..80 / 8 {
            assert_eq!(registry.get::<Clock>("s7").expect("registered").0, 7);
        }
        assert!(!built(), "a change between few look-ups does not build it");
        assert_eq!(registry.get::<Clock>("s7").expect("registered").0, 7);
        assert!(built());
        registry.register("s80", Clock(80)).expect("free");
        assert!(!built(), "a change drops it");
    }
}
