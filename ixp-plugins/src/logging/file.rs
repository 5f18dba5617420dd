//! A file that rotates by size: `app.log` is written until the next record would take
//! it past the limit, then it becomes `app.log.1` (the old `.1` becomes `.2`, and so
//! on), and files beyond the count are deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A size-rotated log file. Each `write` is one record (the `tracing` formatter writes
/// a whole line at once), so a record is never split between two files.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: File,
    size: u64,
    rotation_failed: bool,
}

impl RotatingFile {
    /// Opens (creating it and its directory if absent) `path` for appending. At most
    /// `max_files` files exist at once, the current one included; a file holds at most
    /// `max_bytes` unless a single record is larger.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64, max_files: u32) -> io::Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes: max_bytes.max(1),
            max_files: max_files.max(1),
            file,
            size,
            rotation_failed: false,
        })
    }

    /// The file currently written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let keep = self.max_files - 1;
        if keep == 0 {
            self.file = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&self.path)?;
            self.size = 0;
            return Ok(());
        }
        match fs::remove_file(self.numbered(keep)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..keep).rev() {
            match fs::rename(self.numbered(n), self.numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, self.numbered(1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            if let Err(e) = self.rotate() {
                // Keep the record: append to the current file, and say why once.
                if !self.rotation_failed {
                    eprintln!(
                        "log rotation of `{}` failed: {e}; appending",
                        self.path.display()
                    );
                    self.rotation_failed = true;
                }
                if let Ok(file) = open_append(&self.path) {
                    self.file = file;
                }
            } else {
                self.rotation_failed = false;
            }
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ixp-rotate-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn keeps_at_most_max_files_and_never_splits_a_record() {
        let dir = temp_dir("keep");
        let path = dir.join("logs").join("app.log");
        let mut file = RotatingFile::open(&path, 100, 3).expect("open");
        for i in 0..50 {
            file.write_all(format!("record {i:04} ........................\n").as_bytes())
                .expect("write");
        }
        file.flush().expect("flush");
        let mut names: Vec<_> = fs::read_dir(dir.join("logs"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        names.sort();
        assert_eq!(names, ["app.log", "app.log.1", "app.log.2"]);
        for name in &names {
            let text = fs::read_to_string(dir.join("logs").join(name)).expect("read");
            assert!(text.len() <= 100, "{name}: {} bytes", text.len());
            assert!(text
                .lines()
                .all(|l| l.starts_with("record ") && l.ends_with('.')));
        }
        let newest = fs::read_to_string(&path).expect("read");
        assert!(newest.ends_with("record 0049 ........................\n"));
        let oldest = fs::read_to_string(dir.join("logs/app.log.2")).expect("read");
        assert!(oldest.starts_with("record 0044"), "{oldest}");
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn one_file_is_truncated_in_place() {
        let dir = temp_dir("one");
        let path = dir.join("app.log");
        let mut file = RotatingFile::open(&path, 10, 1).expect("open");
        file.write_all(b"12345678\n").expect("write");
        file.write_all(b"abcdefgh\n").expect("write");
        assert_eq!(fs::read_to_string(&path).expect("read"), "abcdefgh\n");
        assert_eq!(fs::read_dir(&dir).expect("dir").count(), 1);
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let dir = temp_dir("append");
        let path = dir.join("app.log");
        fs::write(&path, "old record\n").expect("seed");
        let mut file = RotatingFile::open(&path, 15, 2).expect("open");
        file.write_all(b"new record\n").expect("write");
        assert_eq!(
            fs::read_to_string(dir.join("app.log.1")).expect("read"),
            "old record\n"
        );
        assert_eq!(fs::read_to_string(&path).expect("read"), "new record\n");
        fs::remove_dir_all(dir).ok();
    }
}
