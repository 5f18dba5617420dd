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
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

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
    /// The services of each type (name and value), so that `get_typed` does not scan
    /// every service. Kept in step with `services`.
    by_type: FastMap<TypeId, Vec<(String, AnyService)>>,
    factories: HashMap<String, FactoryEntry>,
    providers: HashMap<String, String>,
}

impl Inner {
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
#[derive(Clone, Default)]
pub struct ServiceRegistry {
    inner: Arc<RwLock<Inner>>,
    owner: Option<Arc<str>>,
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
            inner: self.inner.clone(),
            owner: Some(owner.into()),
        }
    }

    /// Records which plugin provides which service, to explain a missing service.
    pub fn set_providers(&self, providers: impl IntoIterator<Item = (String, String)>) {
        self.write().providers.extend(providers);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
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
        let mut inner = self.write();
        if let Some(existing) = inner.services.get(name) {
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
        tracing::debug!(
            service = name,
            plugin = self.owner.as_deref().unwrap_or("-"),
            "service registered"
        );
        Ok(())
    }

    /// The service `name` as a `T`.
    pub fn get<T: Send + Sync + 'static>(&self, name: &str) -> Result<Arc<T>, ServiceError> {
        let inner = self.read();
        let Some(entry) = inner.services.get(name) else {
            return Err(ServiceError::NotFound {
                name: name.to_owned(),
                provider: inner.providers.get(name).cloned(),
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

    /// The one service of type `T`, whatever its name.
    pub fn get_typed<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, ServiceError> {
        let inner = self.read();
        let found = inner
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

    /// Whether a service (or factory) of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        let inner = self.read();
        inner.services.contains_key(name) || inner.factories.contains_key(name)
    }

    /// Removes the service `name`; returns whether it existed.
    pub fn unregister(&self, name: &str) -> bool {
        let mut inner = self.write();
        let service = inner.services.remove(name);
        if let Some(entry) = &service {
            inner.unindex(name, entry.type_id);
        }
        service.is_some() | inner.factories.remove(name).is_some()
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
    pub fn remove_owner(&self, owner: &str) -> Vec<String> {
        let mut inner = self.write();
        let mut removed = Vec::new();
        let mut unindex = Vec::new();
        inner.services.retain(|name, e| {
            let keep = e.owner.as_deref() != Some(owner);
            if !keep {
                removed.push(name.clone());
                unindex.push((name.clone(), e.type_id));
            }
            keep
        });
        for (name, type_id) in unindex {
            inner.unindex(&name, type_id);
        }
        inner.factories.retain(|name, e| {
            let keep = e.owner.as_deref() != Some(owner);
            if !keep {
                removed.push(name.clone());
            }
            keep
        });
        removed.sort();
        removed
    }
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
}
