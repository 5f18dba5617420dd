//! Email templates: a directory of minijinja files, three per template.
//!
//! For the template `NAME` (letters, digits, `-` and `_`, with `/` between folders):
//!
//! | file | what | escaping |
//! | --- | --- | --- |
//! | `NAME.subject.txt` | the subject (required); trimmed, line breaks become spaces | none |
//! | `NAME.html` | the HTML body | HTML (values are escaped unless marked `safe`) |
//! | `NAME.txt` | the plain-text body | none |
//!
//! At least one body is required; with both, the mail is `multipart/alternative`. Any
//! other file of the directory can be used from these with `{% include %}`,
//! `{% extends %}` or `{% import %}` (names relative to the directory; names starting
//! with `.` are never loaded). Variables are strict: a variable the context lacks is an
//! error naming the template, the file, the line and the variable, never an empty
//! string. Files are read on first use and read again when they change on disk.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;

/// The suffix of the subject file of a template.
pub const SUBJECT_SUFFIX: &str = ".subject.txt";
/// The suffix of the HTML body of a template.
pub const HTML_SUFFIX: &str = ".html";
/// The suffix of the plain-text body of a template.
pub const TEXT_SUFFIX: &str = ".txt";

/// Why a template could not be loaded or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// No file of the template exists.
    #[error("email template `{name}` not found: none of `{name}.subject.txt`, `{name}.html`, `{name}.txt` is in `{dir}`")]
    NotFound {
        /// The template name.
        name: String,
        /// The templates directory.
        dir: PathBuf,
    },
    /// The subject file is missing.
    #[error(
        "email template `{name}`: the subject file `{name}.subject.txt` is missing in `{dir}`"
    )]
    MissingSubject {
        /// The template name.
        name: String,
        /// The templates directory.
        dir: PathBuf,
    },
    /// Neither body file exists.
    #[error(
        "email template `{name}` has no body: neither `{name}.html` nor `{name}.txt` is in `{dir}`"
    )]
    NoBody {
        /// The template name.
        name: String,
        /// The templates directory.
        dir: PathBuf,
    },
    /// The name is not a template name.
    #[error("`{name}` is not an email template name (letters, digits, `-` and `_`, with `/` between folders)")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A file failed to parse or render (syntax error, undefined variable, missing
    /// include, filter error).
    #[error("email template `{name}`: {message} (in {file}{})", line_suffix(.line))]
    Render {
        /// The template name.
        name: String,
        /// The file where the error is, relative to the directory.
        file: String,
        /// The line, if known.
        line: Option<usize>,
        /// What went wrong, e.g. ``undefined value: `user` is undefined``.
        message: String,
    },
    /// The directory could not be read.
    #[error("email templates directory `{dir}`: {message}")]
    Directory {
        /// The templates directory.
        dir: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn line_suffix(line: &Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

/// A rendered template: what a message is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderedEmail {
    /// The subject (one line).
    pub subject: String,
    /// The HTML body, if the template has one.
    pub html: Option<String>,
    /// The plain-text body, if the template has one.
    pub text: Option<String>,
}

/// The templates of one directory.
pub struct Templates {
    dir: PathBuf,
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// Opens `dir` and parses every `.html` and `.txt` file in it (and below), so that a
    /// syntax error is reported now, with its file and line.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, TemplateError> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(TemplateError::Directory {
                message: if dir.exists() {
                    "is not a directory".into()
                } else {
                    "does not exist".into()
                },
                dir,
            });
        }
        let mut env = Environment::new();
        env.set_loader(minijinja::path_loader(&dir));
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let templates = Self { dir, env };
        let mut files = Vec::new();
        collect_files(&templates.dir, "", &mut files).map_err(|e| TemplateError::Directory {
            dir: templates.dir.clone(),
            message: e.to_string(),
        })?;
        for file in files {
            if let Err(e) = templates.env.get_template(&file) {
                let name = strip_part_suffix(&file).unwrap_or(&file).to_owned();
                return Err(render_error(&name, &file, &e));
            }
        }
        Ok(templates)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Renders template `name` with `context` (any serde `Serialize` value, usually a
    /// struct or a map).
    pub fn render<C: Serialize + ?Sized>(
        &self,
        name: &str,
        context: &C,
    ) -> Result<RenderedEmail, TemplateError> {
        check_name(name)?;
        let ctx = minijinja::Value::from(minijinja::value::Serde(context));
        let subject_file = format!("{name}{SUBJECT_SUFFIX}");
        let html_file = format!("{name}{HTML_SUFFIX}");
        let text_file = format!("{name}{TEXT_SUFFIX}");
        let subject = self.part(name, &subject_file)?;
        let html = self.part(name, &html_file)?;
        let text = self.part(name, &text_file)?;
        let subject = match (subject, &html, &text) {
            (None, None, None) => {
                return Err(TemplateError::NotFound {
                    name: name.into(),
                    dir: self.dir.clone(),
                })
            }
            (None, _, _) => {
                return Err(TemplateError::MissingSubject {
                    name: name.into(),
                    dir: self.dir.clone(),
                })
            }
            (Some(_), None, None) => {
                return Err(TemplateError::NoBody {
                    name: name.into(),
                    dir: self.dir.clone(),
                })
            }
            (Some(subject), _, _) => subject,
        };
        let render = |template: minijinja::Template<'_, '_>, file: &str| {
            template
                .render(&ctx)
                .map_err(|e| render_error(name, file, &e))
        };
        let subject = render(subject, &subject_file)?;
        Ok(RenderedEmail {
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            html: html.map(|t| render(t, &html_file)).transpose()?,
            text: text.map(|t| render(t, &text_file)).transpose()?,
        })
    }

    /// The parsed file, `None` if it does not exist.
    fn part(
        &self,
        name: &str,
        file: &str,
    ) -> Result<Option<minijinja::Template<'_, '_>>, TemplateError> {
        match self.env.get_template(file) {
            Ok(template) => Ok(Some(template)),
            Err(e) if e.kind() == ErrorKind::TemplateNotFound => Ok(None),
            Err(e) => Err(render_error(name, file, &e)),
        }
    }
}

/// Checks a template name: segments of letters, digits, `-` and `_`, joined by `/`.
fn check_name(name: &str) -> Result<(), TemplateError> {
    let valid = !name.is_empty()
        && name.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if valid {
        Ok(())
    } else {
        Err(TemplateError::InvalidName { name: name.into() })
    }
}

/// The template name of a part file (`welcome.subject.txt` -> `welcome`).
fn strip_part_suffix(file: &str) -> Option<&str> {
    [SUBJECT_SUFFIX, HTML_SUFFIX, TEXT_SUFFIX]
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))
}

fn render_error(name: &str, file: &str, error: &minijinja::Error) -> TemplateError {
    let message = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    TemplateError::Render {
        name: name.into(),
        file: error.name().unwrap_or(file).to_owned(),
        line: error.line(),
        message,
    }
}

/// Every `.html` and `.txt` file under `dir`, as `/`-separated relative names, skipping
/// names that start with `.`.
fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let relative = format!("{prefix}{file_name}");
        if entry.file_type()?.is_dir() {
            collect_files(&entry.path(), &format!("{relative}/"), out)?;
        } else if relative.ends_with(HTML_SUFFIX) || relative.ends_with(TEXT_SUFFIX) {
            out.push(relative);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["welcome", "auth/reset-password", "a_b/c-1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "../etc/passwd", "a//b", "/abs", "a.b", "a b", "a\\b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn part_suffixes_map_to_the_template_name() {
        assert_eq!(strip_part_suffix("welcome.subject.txt"), Some("welcome"));
        assert_eq!(strip_part_suffix("a/b.html"), Some("a/b"));
        assert_eq!(strip_part_suffix("welcome.txt"), Some("welcome"));
    }
}
