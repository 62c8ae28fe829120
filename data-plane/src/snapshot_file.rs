//! The last good snapshot on disk, so a data plane restarted while the control plane is away
//! still serves. Written atomically (temp file, fsync, rename) with mode 0600: it holds the
//! upstream API keys.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use gateway_proto::v1::Snapshot;
use prost::Message;

/// Why a persisted snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a snapshot: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
}

/// Reads the persisted snapshot, if there is one.
pub fn load(path: &Path) -> Result<Option<Snapshot>, LoadError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LoadError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    Snapshot::decode(bytes.as_slice())
        .map(Some)
        .map_err(|source| LoadError::Decode {
            path: path.to_owned(),
            source,
        })
}

/// Replaces the persisted snapshot with `encoded` atomically.
pub fn store(path: &Path, encoded: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(encoded)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable.
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("cgw-snap-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("snapshot.pb");
        assert!(load(&path).unwrap().is_none());
        let snapshot = Snapshot {
            version: 42,
            ..Default::default()
        };
        store(&path, &snapshot.encode_to_vec()).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().version, 42);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        fs::write(&path, b"\xff\xff\xff\xff").unwrap();
        assert!(matches!(load(&path), Err(LoadError::Decode { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
