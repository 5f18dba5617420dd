//! The problems the start-up check finds, and the report that lists them all.

use std::fmt;

/// One problem in a plugin composition. Each names where it comes from: the plugin,
/// the config path, the Cargo feature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// Two compiled-in or registered plugins share a name.
    #[error("duplicate plugin name `{name}`: registered by {}", first_and_second(.types))]
    DuplicatePlugin {
        /// The shared name.
        name: String,
        /// The Rust types that claim it.
        types: Vec<String>,
    },
    /// A plugin's metadata (version or dependency string) is malformed.
    #[error("plugin `{plugin}` has invalid metadata: {message}")]
    InvalidMetadata {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// A required dependency is not compiled in (or not registered).
    #[error("plugin `{plugin}` depends on `{dependency}`, which is not compiled in{}", feature_hint(.feature))]
    MissingDependency {
        /// The plugin that has the dependency.
        plugin: String,
        /// The missing dependency.
        dependency: String,
        /// The Cargo feature that would compile the dependency in, if it is a built-in.
        feature: Option<String>,
    },
    /// A required dependency is compiled in but disabled in the config.
    #[error("plugin `{plugin}` depends on `{dependency}`, which is disabled (plugins.{dependency}.enabled = false)")]
    DisabledDependency {
        /// The plugin that has the dependency.
        plugin: String,
        /// The disabled dependency.
        dependency: String,
    },
    /// A required dependency is compiled in but runs only when configured, and the
    /// config has no section for it.
    #[error("plugin `{plugin}` depends on `{dependency}`, which runs only when configured: add a [plugins.{dependency}] section")]
    UnconfiguredDependency {
        /// The plugin that has the dependency.
        plugin: String,
        /// The dependency without a section.
        dependency: String,
    },
    /// A dependency is present but its version is outside the requirement.
    #[error("plugin `{plugin}` requires `{dependency} {requirement}`, but version {found} is compiled in")]
    VersionMismatch {
        /// The plugin that has the dependency.
        plugin: String,
        /// The dependency.
        dependency: String,
        /// The semver requirement.
        requirement: String,
        /// The version compiled in.
        found: String,
    },
    /// Plugins depend on each other in a cycle.
    #[error("dependency cycle: {}", .path.join(" -> "))]
    Cycle {
        /// The cycle, first plugin repeated at the end: `a -> b -> c -> a`.
        path: Vec<String>,
    },
    /// The config names a plugin that is not compiled in.
    #[error("{path}: unknown plugin `{name}`{}{}", suggestion_hint(.suggestion), feature_hint(.feature))]
    UnknownPlugin {
        /// The name in the config.
        name: String,
        /// Where in the config.
        path: String,
        /// The closest compiled-in plugin name.
        suggestion: Option<String>,
        /// The Cargo feature that compiles a built-in plugin of that name in.
        feature: Option<String>,
    },
    /// A config value does not fit its type or fails validation.
    #[error("{path}: {message}")]
    InvalidConfig {
        /// Full dotted path of the value, e.g. `plugins.cache-plugin.ttl`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// A config key that nothing reads (most often a typo).
    #[error("{path}: unknown key{}", suggestion_hint(.suggestion))]
    UnknownConfigKey {
        /// Full dotted path of the key.
        path: String,
        /// The closest known key.
        suggestion: Option<String>,
    },
    /// `${VAR}` names an environment variable that is not set and has no default.
    #[error("{path}: environment variable `{var}` is not set (write `${{{var}:-default}}` to give a default)")]
    MissingEnvVar {
        /// The variable.
        var: String,
        /// Where it is referenced.
        path: String,
    },
}

fn first_and_second(types: &[String]) -> String {
    types
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(" and ")
}

fn feature_hint(feature: &Option<String>) -> String {
    match feature {
        Some(f) => format!(" (enable the Cargo feature `{f}`)"),
        None => String::new(),
    }
}

fn suggestion_hint(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

impl Problem {
    /// The config path the problem is about, for the problems that have one.
    pub(crate) fn config_path(&self) -> Option<&str> {
        match self {
            Problem::InvalidConfig { path, .. }
            | Problem::UnknownConfigKey { path, .. }
            | Problem::MissingEnvVar { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Every problem the start-up check found, each once. Nothing was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    problems: Vec<Problem>,
    /// Per problem, where its value was set when not in the file's root (an environment
    /// variable, a profile): said after it, since the file does not show that value.
    origins: Vec<Option<String>>,
}

impl CheckReport {
    /// A report of these problems, deduplicated, in the order found.
    /// A type error at a value whose `${VAR}` is unset follows from that and is left out.
    pub fn new(problems: Vec<Problem>) -> Self {
        let unset: Vec<String> = problems
            .iter()
            .filter_map(|p| match p {
                Problem::MissingEnvVar { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        let mut unique: Vec<Problem> = Vec::with_capacity(problems.len());
        for problem in problems {
            let follows_from_unset_var =
                matches!(&problem, Problem::InvalidConfig { path, .. } if unset.contains(path));
            if !follows_from_unset_var && !unique.contains(&problem) {
                unique.push(problem);
            }
        }
        Self {
            problems: unique,
            origins: Vec::new(),
        }
    }

    /// Notes where each problem's value was set, as `origin_of` its path says.
    pub(crate) fn with_origins<'a>(mut self, origin_of: impl Fn(&str) -> Option<&'a str>) -> Self {
        self.origins = self
            .problems
            .iter()
            .map(|p| p.config_path().and_then(&origin_of).map(str::to_owned))
            .collect();
        self
    }

    /// The problems.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "the plugin composition has {n} problem{}; nothing was started:",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, problem) in self.problems.iter().enumerate() {
            write!(f, "\n  - {problem}")?;
            if let Some(Some(origin)) = self.origins.get(i) {
                write!(f, " (set by {origin})")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for CheckReport {}

/// The closest candidate to `word` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_owned())
}
