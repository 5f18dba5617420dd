//! The start-up check: from a [`Catalog`] and an [`IxpConfig`] to a [`Plan`] (the
//! enabled plugins in start order, each with its parsed config), or a
//! [`CheckReport`] with every problem at once. No I/O, nothing started.
//!
//! ```
//! use ixp_core::{check, ixp_plugin, BoxError, Catalog, IxpConfig, NoConfig, Plugin, PluginContext};
//!
//! #[ixp_plugin(name = "b-plugin", version = "1.0.0", dependencies = ["a-plugin"])]
//! struct B;
//! impl Plugin for B {
//!     type Config = NoConfig;
//!     async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> { Ok(B) }
//! }
//!
//! // `a-plugin` is not in the catalog: the check names it.
//! let report = check(&Catalog::new().with::<B>(), &IxpConfig::default()).unwrap_err();
//! assert_eq!(
//!     report.problems()[0].to_string(),
//!     "plugin `b-plugin` depends on `a-plugin`, which is not compiled in"
//! );
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use semver::{Version, VersionReq};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{is_at_or_under, IxpConfig};
use crate::plugin::PluginMetadata;
use crate::problem::{closest, CheckReport, Problem};
use crate::registry::{AnyConfig, Catalog, PluginRegistration};

/// A dependency string split into name and requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The plugin depended on.
    pub name: String,
    /// The version requirement (`*` when none was given).
    pub requirement: VersionReq,
}

impl Dependency {
    /// Parses `"name"` or `"name <semver requirement>"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, requirement) = split_dependency(text)?;
        Ok(Self {
            name: name.to_owned(),
            requirement: requirement.unwrap_or(VersionReq::STAR),
        })
    }
}

/// `"name"` or `"name <requirement>"` split, without copying the name; `None` when no
/// requirement was written (any version fits).
fn split_dependency(text: &str) -> Result<(&str, Option<VersionReq>), String> {
    let trimmed = text.trim();
    let (name, req) = match trimmed.find(char::is_whitespace) {
        Some(at) => (&trimmed[..at], Some(trimmed[at..].trim())),
        None => (trimmed, None),
    };
    if name.is_empty() {
        return Err(format!("empty dependency `{text}`"));
    }
    let requirement = req
        .map(|req| {
            VersionReq::parse(req).map_err(|e| {
                format!("dependency `{text}`: `{req}` is not a semver requirement ({e})")
            })
        })
        .transpose()?;
    Ok((name, requirement))
}

/// One plugin of a plan.
pub struct PlannedPlugin {
    pub(crate) registration: PluginRegistration,
    pub(crate) metadata: PluginMetadata,
    pub(crate) config: AnyConfig,
    pub(crate) effective_config: Value,
    pub(crate) hook_timeout: Duration,
    /// Indices (in the plan) of the plugins this one starts after.
    pub(crate) dependencies: Vec<usize>,
}

impl PlannedPlugin {
    /// The plugin's metadata.
    pub fn metadata(&self) -> &PluginMetadata {
        &self.metadata
    }

    /// The effective configuration (defaults applied, secrets masked).
    pub fn effective_config(&self) -> &Value {
        &self.effective_config
    }

    /// The timeout of each lifecycle hook.
    pub fn hook_timeout(&self) -> Duration {
        self.hook_timeout
    }
}

/// The result of a successful check: the enabled plugins in start order.
pub struct Plan {
    pub(crate) plugins: Vec<PlannedPlugin>,
    pub(crate) disabled: Vec<String>,
}

/// A printable summary of one planned plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanEntry {
    /// Position in the start order, from 1.
    pub position: usize,
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Names of the plugins it starts after.
    pub starts_after: Vec<String>,
    /// Effective config, secrets masked.
    pub config: Value,
}

impl Plan {
    /// The names of the enabled plugins in start order.
    pub fn start_order(&self) -> Vec<&str> {
        self.plugins.iter().map(|p| p.metadata.name).collect()
    }

    /// The plugins in start order.
    pub fn plugins(&self) -> &[PlannedPlugin] {
        &self.plugins
    }

    /// Plugins compiled in but disabled by the config.
    pub fn disabled(&self) -> &[String] {
        &self.disabled
    }

    /// A summary of every planned plugin (what `ixp-app check` prints).
    pub fn entries(&self) -> Vec<PlanEntry> {
        self.plugins
            .iter()
            .enumerate()
            .map(|(i, p)| PlanEntry {
                position: i + 1,
                name: p.metadata.name.to_owned(),
                version: p.metadata.version.to_owned(),
                starts_after: p
                    .dependencies
                    .iter()
                    .map(|d| self.plugins[*d].metadata.name.to_owned())
                    .collect(),
                config: p.effective_config.clone(),
            })
            .collect()
    }
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("start_order", &self.start_order())
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// Runs every start-up check and returns the plan, or every problem at once.
pub fn check(catalog: &Catalog, config: &IxpConfig) -> Result<Plan, CheckReport> {
    plan_with(catalog, config, HashMap::new())
}

/// [`check`] with typed configs given in code for some plugins (these skip parsing but
/// not validation).
pub(crate) fn plan_with(
    catalog: &Catalog,
    config: &IxpConfig,
    mut typed: HashMap<String, AnyConfig>,
) -> Result<Plan, CheckReport> {
    let mut problems: Vec<Problem> = Vec::new();
    let registrations = catalog.registrations();
    // Each registration's metadata, read once (it sits behind a `dyn` call).
    let metas: Vec<PluginMetadata> = registrations.iter().map(|r| r.metadata()).collect();

    // Names: one group per name, in name order; a group of more than one registration
    // is a duplicate. (A sorted vector: cheaper than a tree map at 10,000 plugins.)
    // (name, registration index): sorted by name, then by catalog order.
    let mut sorted: Vec<(&'static str, usize)> =
        metas.iter().enumerate().map(|(i, m)| (m.name, i)).collect();
    sorted.sort_unstable();
    let mut groups: Vec<(&'static str, usize)> = Vec::with_capacity(sorted.len());
    let mut at = 0;
    while at < sorted.len() {
        let (name, first) = sorted[at];
        let len = sorted[at..].iter().take_while(|(n, _)| *n == name).count();
        if len > 1 {
            problems.push(Problem::DuplicatePlugin {
                name: name.to_owned(),
                types: sorted[at..at + len]
                    .iter()
                    .map(|&(_, r)| registrations[r].type_name().to_owned())
                    .collect(),
            });
        }
        groups.push((name, first));
        at += len;
    }
    let compiled_in = |name: &str| groups.binary_search_by(|(n, _)| (*n).cmp(name)).is_ok();

    // Sections that name no compiled-in plugin.
    for (name, section) in config.plugins() {
        if compiled_in(name) || !section.enabled {
            continue;
        }
        let features = catalog.features_for(name);
        let candidates: Vec<&str> = groups
            .iter()
            .map(|(n, _)| *n)
            .chain(catalog.hinted_names())
            .collect();
        problems.push(Problem::UnknownPlugin {
            name: name.clone(),
            path: format!("plugins.{name}"),
            suggestion: if features.is_empty() {
                closest(name, candidates.iter().copied())
            } else {
                None
            },
            feature: (!features.is_empty()).then(|| features.join("` or `")),
        });
    }

    // The enabled set, in name order: indices into `registrations`.
    // A plugin given a typed config in code counts as configured.
    let is_on = |name: &str, r: usize| match config.plugin(name) {
        Some(section) => section.enabled,
        None => typed.contains_key(name) || metas[r].enabled_by_default,
    };
    let (on, off): (Vec<_>, Vec<_>) = groups.iter().partition(|(name, r)| is_on(name, *r));
    let enabled: Vec<&PluginRegistration> = on.iter().map(|&(_, r)| &registrations[r]).collect();
    let enabled_meta: Vec<&PluginMetadata> = on.iter().map(|&(_, r)| &metas[r]).collect();
    let disabled: Vec<String> = off.iter().map(|(n, _)| (*n).to_owned()).collect();
    let index: HashMap<&str, usize, foldhash::fast::RandomState> = enabled_meta
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name, i))
        .collect();

    // Config problems found while loading, except those under disabled plugins.
    for problem in config.problems() {
        let under_disabled = problem.config_path().is_some_and(|path| {
            disabled.iter().any(|d| {
                let prefix = format!("plugins.{d}");
                path == prefix || path.starts_with(&format!("{prefix}."))
            })
        });
        if !under_disabled {
            problems.push(problem.clone());
        }
    }

    // Dependencies, versions, edges. Each version is parsed once.
    // Many plugins share a version string: each distinct one is parsed once.
    let mut parsed_versions: HashMap<&str, Result<Version, String>, foldhash::fast::RandomState> =
        HashMap::default();
    let versions: Vec<Result<Version, String>> = enabled_meta
        .iter()
        .map(|m| {
            parsed_versions
                .entry(m.version)
                .or_insert_with(|| Version::parse(m.version).map_err(|e| e.to_string()))
                .clone()
        })
        .collect();
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); enabled.len()];
    for (i, meta) in enabled_meta.iter().enumerate() {
        if let Err(e) = &versions[i] {
            problems.push(Problem::InvalidMetadata {
                plugin: meta.name.to_owned(),
                message: format!("version `{}` is not semver ({e})", meta.version),
            });
        }
        let deps = meta
            .dependencies
            .iter()
            .map(|d| (d, true))
            .chain(meta.optional_dependencies.iter().map(|d| (d, false)));
        for (text, required) in deps {
            let (name, requirement) = match split_dependency(text) {
                Ok(dep) => dep,
                Err(message) => {
                    problems.push(Problem::InvalidMetadata {
                        plugin: meta.name.to_owned(),
                        message,
                    });
                    continue;
                }
            };
            match index.get(name) {
                Some(&j) => {
                    if let Some(requirement) = requirement {
                        let fits = versions[j].as_ref().is_ok_and(|v| requirement.matches(v));
                        if !fits {
                            problems.push(Problem::VersionMismatch {
                                plugin: meta.name.to_owned(),
                                dependency: name.to_owned(),
                                requirement: requirement.to_string(),
                                found: enabled_meta[j].version.to_owned(),
                            });
                        }
                    }
                    if !edges[i].contains(&j) {
                        edges[i].push(j);
                    }
                }
                None if !required => {}
                None if compiled_in(name) => {
                    let (plugin, dependency) = (meta.name.to_owned(), name.to_owned());
                    problems.push(if config.plugin(name).is_some() {
                        Problem::DisabledDependency { plugin, dependency }
                    } else {
                        Problem::UnconfiguredDependency { plugin, dependency }
                    });
                }
                None => {
                    let features = catalog.features_for(name);
                    problems.push(Problem::MissingDependency {
                        plugin: meta.name.to_owned(),
                        dependency: name.to_owned(),
                        feature: (!features.is_empty()).then(|| features.join("` or `")),
                    });
                }
            }
        }
    }

    // Order, or cycles.
    let order = match topological_order(&enabled, &edges) {
        Ok(order) => order,
        Err(cycles) => {
            for cycle in cycles {
                problems.push(Problem::Cycle {
                    path: cycle
                        .iter()
                        .map(|&i| enabled_meta[i].name.to_owned())
                        .collect(),
                });
            }
            Vec::new()
        }
    };

    // Typed configs.
    let mut parsed: Vec<Option<(AnyConfig, Duration)>> = Vec::with_capacity(enabled.len());
    // Plugins whose config came from code: the file's values for them (and where those
    // were set) are not used.
    let mut from_code: Vec<&'static str> = Vec::new();
    let empty = Value::Object(Map::new());
    // Each plugin's config path (`plugins.<name>`), in one reused buffer.
    let mut path = String::from("plugins.");
    for (reg, meta) in enabled.iter().zip(&enabled_meta) {
        path.truncate("plugins.".len());
        path.push_str(meta.name);
        let section = config.plugin(meta.name);
        let timeout = section
            .and_then(|s| s.hook_timeout)
            .unwrap_or(config.server().hook_timeout);
        let ty = reg.plugin_type();
        let result = match typed.remove(meta.name) {
            Some(value) => {
                from_code.push(meta.name);
                let found = ty.validate(&value, &path);
                if found.is_empty() {
                    Ok(value)
                } else {
                    Err(found)
                }
            }
            None => match section {
                Some(s) => ty.parse_config(&s.config, &path, &s.env_created),
                None => ty.parse_config(&empty, &path, &[]),
            },
        };
        match result {
            Ok(value) => parsed.push(Some((value, timeout))),
            Err(mut found) => {
                problems.append(&mut found);
                parsed.push(None);
            }
        }
    }

    if !problems.is_empty() {
        let given_in_code = |path: &str| {
            path.strip_prefix("plugins.")
                .is_some_and(|rest| from_code.iter().any(|name| is_at_or_under(rest, name)))
        };
        let report = CheckReport::new(problems);
        return Err(report.with_origins(|path| {
            if given_in_code(path) {
                None
            } else {
                config.origin_of(path)
            }
        }));
    }

    let mut position = vec![0usize; enabled.len()];
    for (pos, &i) in order.iter().enumerate() {
        position[i] = pos;
    }
    let mut plugins = Vec::with_capacity(order.len());
    for &i in &order {
        let reg = enabled[i];
        let Some((config, hook_timeout)) = parsed[i].take() else {
            continue;
        };
        let ty = reg.plugin_type();
        let mut dependencies: Vec<usize> = edges[i].iter().map(|&j| position[j]).collect();
        dependencies.sort_unstable();
        plugins.push(PlannedPlugin {
            registration: *reg,
            metadata: *enabled_meta[i],
            effective_config: ty.effective_config(&config),
            config,
            hook_timeout,
            dependencies,
        });
    }
    Ok(Plan { plugins, disabled })
}

/// Kahn's algorithm (ties broken by name, which is the index order); on cycles, one
/// cycle path per strongly connected component.
fn topological_order(
    nodes: &[&PluginRegistration],
    edges: &[Vec<usize>],
) -> Result<Vec<usize>, Vec<Vec<usize>>> {
    let n = nodes.len();
    let mut remaining: Vec<usize> = edges.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, deps) in edges.iter().enumerate() {
        for &j in deps {
            dependents[j].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| remaining[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    Err(find_cycles(edges, &remaining))
}

/// One cycle per strongly connected component among the unordered nodes (Tarjan),
/// each starting at its smallest node, found by breadth-first search.
fn find_cycles(edges: &[Vec<usize>], remaining: &[usize]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let stuck: Vec<bool> = remaining.iter().map(|&r| r > 0).collect();
    let components = tarjan(edges, &stuck);
    let mut cycles = Vec::new();
    for component in components {
        let in_component: std::collections::HashSet<usize> = component.iter().copied().collect();
        let Some(&start) = component.iter().min() else {
            continue;
        };
        let self_loop = edges[start].contains(&start);
        if component.len() == 1 && !self_loop {
            continue;
        }
        // Shortest path from start back to start within the component.
        let mut parent: Vec<Option<usize>> = vec![None; n];
        let mut queue = VecDeque::from([start]);
        let mut closing = None;
        'search: while let Some(u) = queue.pop_front() {
            let mut next: Vec<usize> = edges[u]
                .iter()
                .copied()
                .filter(|v| in_component.contains(v))
                .collect();
            next.sort_unstable();
            for v in next {
                if v == start {
                    closing = Some(u);
                    break 'search;
                }
                if parent[v].is_none() {
                    parent[v] = Some(u);
                    queue.push_back(v);
                }
            }
        }
        let Some(mut u) = closing else { continue };
        let mut path = vec![start];
        let mut back = Vec::new();
        while u != start {
            back.push(u);
            match parent[u] {
                Some(p) => u = p,
                None => break,
            }
        }
        back.reverse();
        path.extend(back);
        path.push(start);
        cycles.push(path);
    }
    cycles.sort();
    cycles
}

/// Iterative Tarjan over the nodes marked `include`.
fn tarjan(edges: &[Vec<usize>], include: &[bool]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut counter = 0;
    for root in 0..n {
        if !include[root] || index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut next)) = work.last_mut() {
            if let Some(&w) = edges[v].get(*next) {
                *next += 1;
                if !include[w] {
                    continue;
                }
                if index[w] == usize::MAX {
                    index[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some(&(parent, _)) = work.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    components.push(component);
                }
            }
        }
    }
    components
}
