//! The usage spool: when the usage sink (Redis, or the control plane in standalone mode) does
//! not answer, events are appended to a local file instead of waiting in memory, and replayed
//! in order — with their original ids, so the ledger never counts one twice — once it does.
//!
//! Format: records of `[length: u32 LE][crc32 of payload: u32 LE][payload: UsageEvent
//! protobuf]`, appended and fsynced per batch. A torn or corrupt record (a crash mid-write)
//! ends the readable part: it is counted, skipped, and never crashes the replay.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use gateway_proto::v1::UsageEvent;
use prost::Message;

/// Refuses records claiming to be larger than this (a corrupt length).
const MAX_RECORD: u32 = 1024 * 1024;

/// What a replay read back.
#[derive(Debug, Default)]
pub struct Replay {
    pub events: Vec<UsageEvent>,
    /// Records that could not be read (a torn tail).
    pub corrupt: u64,
}

/// An append-only spool file.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    /// Events in the spool (as last counted).
    depth: u64,
}

impl Spool {
    /// Opens (or creates) the spool at `path`, counting what it already holds.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true).read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path)?;
        let mut spool = Self {
            path: path.to_owned(),
            file,
            depth: 0,
        };
        spool.depth = spool.read()?.events.len() as u64;
        Ok(spool)
    }

    /// Events waiting in the spool.
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Appends `events` durably (one fsync for the batch).
    pub fn append(&mut self, events: &[UsageEvent]) -> io::Result<()> {
        let mut buf = Vec::new();
        for event in events {
            let payload = event.encode_to_vec();
            let len = u32::try_from(payload.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "event too large"))?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.depth += events.len() as u64;
        Ok(())
    }

    /// Every readable event, in the order appended.
    pub fn read(&self) -> io::Result<Replay> {
        let mut bytes = Vec::new();
        File::open(&self.path)?.read_to_end(&mut bytes)?;
        let mut replay = Replay::default();
        let mut at = 0;
        while at < bytes.len() {
            let Some(header) = bytes.get(at..at + 8) else {
                replay.corrupt += 1;
                break;
            };
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let payload = (len <= MAX_RECORD)
                .then(|| bytes.get(at + 8..at + 8 + len as usize))
                .flatten();
            let event = payload
                .filter(|p| crc32fast::hash(p) == crc)
                .and_then(|p| UsageEvent::decode(p).ok());
            match event {
                Some(event) => replay.events.push(event),
                None => {
                    replay.corrupt += 1;
                    break;
                }
            }
            at += 8 + len as usize;
        }
        Ok(replay)
    }

    /// Empties the spool after everything in it was delivered.
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.depth = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u32) -> UsageEvent {
        UsageEvent {
            id: format!("00000000-0000-7000-8000-{i:012}"),
            cost_micros: i64::from(i),
            ..Default::default()
        }
    }

    #[test]
    fn appends_reopens_replays_in_order_and_clears() {
        let dir = std::env::temp_dir().join(format!("cgw-spool-{}", uuid::Uuid::new_v4()));
        let path = dir.join("usage.spool");
        let mut spool = Spool::open(&path).unwrap();
        spool.append(&[event(1), event(2)]).unwrap();
        spool.append(&[event(3)]).unwrap();
        drop(spool);
        let mut spool = Spool::open(&path).unwrap();
        assert_eq!(spool.depth(), 3, "survives a restart");
        let replay = spool.read().unwrap();
        assert_eq!(replay.corrupt, 0);
        let ids: Vec<i64> = replay.events.iter().map(|e| e.cost_micros).collect();
        assert_eq!(ids, [1, 2, 3]);
        spool.clear().unwrap();
        assert_eq!(spool.read().unwrap().events.len(), 0);
        spool.append(&[event(4)]).unwrap();
        assert_eq!(
            spool.read().unwrap().events[0].cost_micros,
            4,
            "appends after a clear"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_counted_and_skipped() {
        let dir = std::env::temp_dir().join(format!("cgw-spool-{}", uuid::Uuid::new_v4()));
        let path = dir.join("usage.spool");
        let mut spool = Spool::open(&path).unwrap();
        spool.append(&[event(1), event(2)]).unwrap();
        // A crash mid-append: half a record at the end.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        let replay = spool.read().unwrap();
        assert_eq!(replay.events.len(), 2);
        assert_eq!(replay.corrupt, 1);
        // A flipped byte inside a record is caught by its checksum.
        let mut bytes = fs::read(&path).unwrap();
        bytes[12] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let replay = spool.read().unwrap();
        assert_eq!((replay.events.len(), replay.corrupt), (0, 1));
        fs::remove_dir_all(&dir).unwrap();
    }
}
