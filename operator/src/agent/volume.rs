//! Reading a Secret or ConfigMap volume as the kubelet writes it: its
//! atomic writer puts each payload in a new timestamped directory, points the
//! `..data` symlink at it in one rename, and the keys are symlinks through
//! `..data`. Reading through the target of `..data` sees one payload whole.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// The keys of a volume and their bytes.
pub fn read(dir: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    // The payload directory can be removed between reading the link and
    // reading the files (the next payload arrived): read again.
    let mut last = None;
    for _ in 0..5 {
        match read_once(dir) {
            Ok(files) => return Ok(files),
            Err(err) if err.kind() == io::ErrorKind::NotFound => last = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("unreadable")))
}

fn read_once(dir: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let data = dir.join("..data");
    let payload = match std::fs::read_link(&data) {
        Ok(target) => dir.join(target),
        // Not written by the kubelet (a plain directory): as it is.
        Err(err) if err.kind() == io::ErrorKind::NotFound => dir.to_path_buf(),
        Err(err) if err.kind() == io::ErrorKind::InvalidInput => dir.to_path_buf(),
        Err(err) => return Err(err),
    };
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&payload)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path)?.is_file() {
            files.insert(name, std::fs::read(&path)?);
        }
    }
    Ok(files)
}

/// Writes `files` into `dir` as the kubelet's atomic writer does: a new
/// payload directory, a `..data_tmp` symlink renamed over `..data`, the keys
/// as symlinks through `..data`, the old payload removed. For tests and for
/// playing the kubelet where there is none.
pub fn write_atomically(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let payload = dir.join(&stamp);
    std::fs::create_dir(&payload)?;
    for (name, bytes) in files {
        std::fs::write(payload.join(name), bytes)?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for name in files.keys() {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    // Keys no longer in the payload go, as the kubelet removes them.
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !files.contains_key(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_reads_back_what_the_atomic_writer_wrote_last() {
        let dir = std::env::temp_dir().join(format!("certshift-volume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = BTreeMap::from([("a".to_owned(), b"1".to_vec()), ("b".to_owned(), b"2".to_vec())]);
        write_atomically(&dir, &first).unwrap();
        assert_eq!(read(&dir).unwrap(), first);
        let second = BTreeMap::from([("a".to_owned(), b"3".to_vec())]);
        write_atomically(&dir, &second).unwrap();
        assert_eq!(read(&dir).unwrap(), second);
        assert!(
            std::fs::symlink_metadata(dir.join("b")).is_err(),
            "the dropped key is gone"
        );
        let payloads = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("..") && name != "..data")
            .count();
        assert!(payloads <= 1, "old payloads are removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
