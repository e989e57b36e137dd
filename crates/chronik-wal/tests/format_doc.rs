//! Builds a record and a segment header byte by byte from the layout tables in
//! docs/WAL_FORMAT.md and checks that the WAL decodes them: the document and the code agree.

use chronik_wal::record::{RecordHeader, RecordType};

const DOC: &str = include_str!("../../../docs/WAL_FORMAT.md");

/// Rows `(offset, size, field)` of the first table after `heading`.
fn layout(heading: &str) -> Vec<(usize, String, String)> {
    let start = DOC.find(heading).unwrap_or_else(|| panic!("WAL_FORMAT.md has no '{heading}'"));
    DOC[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| offset"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].parse().expect("offset"), cells[2].to_string(), cells[3].to_string())
        })
        .collect()
}

fn put(buf: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    if buf.len() < offset + bytes.len() {
        buf.resize(offset + bytes.len(), 0);
    }
    buf[offset..offset + bytes.len()].copy_from_slice(bytes);
}

#[test]
fn record_layout_matches_document() {
    let rows = layout("Every record is a 48-byte header");
    let payload = b"kafka batch bytes";
    let seq = 7u64;
    let mut rec = Vec::new();
    let mut crc_at = None;
    for (offset, size, field) in &rows {
        let value: Vec<u8> = match field.as_str() {
            "magic" => b"CHR3".to_vec(),
            "version" => vec![3],
            "record_type" => vec![1],
            "entry_kind" => vec![1],
            "flags" => vec![0],
            "crc" => {
                crc_at = Some(*offset);
                vec![0; 4]
            }
            "payload_len" => (payload.len() as u32).to_le_bytes().to_vec(),
            "group" => 42u64.to_le_bytes().to_vec(),
            "term" => 5u64.to_le_bytes().to_vec(),
            "index" => 1000u64.to_le_bytes().to_vec(),
            "leader_id" => 3u64.to_le_bytes().to_vec(),
            "payload" => payload.to_vec(),
            other => panic!("undocumented field {other}"),
        };
        if size != "payload_len" {
            assert_eq!(value.len(), size.parse::<usize>().unwrap(), "size of {field}");
        }
        put(&mut rec, *offset, &value);
    }
    // "the payload, the segment's seq as 8 little-endian bytes, header bytes 4..8 and 12..48"
    let mut covered = payload.to_vec();
    covered.extend_from_slice(&seq.to_le_bytes());
    covered.extend_from_slice(&rec[4..8]);
    covered.extend_from_slice(&rec[12..48]);
    let crc_at = crc_at.expect("crc documented");
    put(&mut rec, crc_at, &crc32c::crc32c(&covered).to_le_bytes());

    let h = RecordHeader::decode(&rec, seq).expect("record built from the document decodes");
    assert_eq!(
        h,
        RecordHeader {
            record_type: RecordType::Entry,
            entry_kind: 1,
            payload_len: payload.len() as u32,
            group: 42,
            term: 5,
            index: 1000,
            leader_id: 3
        }
    );
    assert!(RecordHeader::decode(&rec, seq + 1).is_err(), "the CRC is seeded with the segment seq");
}

#[test]
fn segment_header_layout_matches_document() {
    let rows = layout("Segment header:");
    let mut header = Vec::new();
    for (offset, size, field) in &rows {
        let size: usize = size.parse().unwrap();
        let value: Vec<u8> = match field.as_str() {
            "magic" => b"CHRONIKS".to_vec(),
            "format" => 3u32.to_le_bytes().to_vec(),
            "reserved" => vec![0; size],
            "seq" => 9u64.to_le_bytes().to_vec(),
            "size" => (1u64 << 20).to_le_bytes().to_vec(),
            "crc" => vec![0; 4],
            other => panic!("undocumented field {other}"),
        };
        assert_eq!(value.len(), size, "size of {field}");
        put(&mut header, *offset, &value);
    }
    let crc = crc32c::crc32c(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(chronik_wal::segment::segment_file_name(9));
    let mut file = header.clone();
    file.resize(1 << 20, 0);
    std::fs::write(&path, &file).unwrap();
    let seg = chronik_wal::segment::Segment::open(&path, false).expect("header built from the document opens");
    assert_eq!((seg.seq, seg.size), (9, 1 << 20));
    assert_eq!(seg.seal(), None);
}
