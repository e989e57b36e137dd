//! Legacy (magic 0 and 1) message sets, as old clients sent them and v1 kept them byte for
//! byte (format document, section 4.4). v1's decoded copy of these has wrong timestamps, so
//! the messages are read from the wire bytes. Only the first message's offset was rewritten by
//! v1; a message's offset is the batch's base offset plus its position.

use bytes::Bytes;

/// One message of a legacy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyMessage {
    /// -1 for magic 0, which has no timestamp (Kafka's "no timestamp").
    pub timestamp: i64,
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    b.get(at..at + 4).map(|s| i32::from_be_bytes(s.try_into().expect("4")))
}

/// The messages of a message set, each checked against its CRC-32. A compressed (wrapper)
/// message is refused: v1 never served those correctly (format document, 4.4).
pub fn parse_message_set(set: &Bytes) -> Result<Vec<LegacyMessage>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < set.len() {
        let size = be_i32(set, pos + 8).ok_or_else(|| format!("message at byte {pos}: truncated log entry header"))?;
        let start = pos + 12;
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| start.checked_add(s))
            .filter(|e| *e <= set.len())
            .ok_or_else(|| format!("message at byte {pos}: size {size} runs past the end of the set"))?;
        out.push(parse_message(set, start, end).map_err(|e| format!("message at byte {pos}: {e}"))?);
        pos = end;
    }
    if out.is_empty() {
        return Err("empty message set".into());
    }
    Ok(out)
}

fn parse_message(set: &Bytes, start: usize, end: usize) -> Result<LegacyMessage, String> {
    let m = &set[start..end];
    if m.len() < 6 {
        return Err("message shorter than its header".into());
    }
    let stored_crc = u32::from_be_bytes(m[0..4].try_into().expect("4"));
    let computed = crc32fast::hash(&m[4..]);
    if stored_crc != computed {
        return Err(format!("message checksum mismatch (stored {stored_crc:#010x}, computed {computed:#010x})"));
    }
    let (magic, attributes) = (m[4], m[5]);
    if attributes & 0x07 != 0 {
        return Err(format!("compressed legacy message (codec {}) is not supported", attributes & 0x07));
    }
    let mut at = 6;
    let (timestamp, log_append_time) = match magic {
        0 => (-1, false),
        1 => {
            let ts = m.get(6..14).ok_or("message shorter than its timestamp")?;
            at = 14;
            (i64::from_be_bytes(ts.try_into().expect("8")), attributes & 0x08 != 0)
        }
        other => return Err(format!("message magic {other}")),
    };
    let mut field = |name: &str| -> Result<Option<Bytes>, String> {
        let len = be_i32(m, at).ok_or_else(|| format!("message shorter than its {name} length"))?;
        at += 4;
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        let bytes = m.get(at..at + len).ok_or_else(|| format!("{name} of {len} bytes runs past the message"))?;
        let slice = set.slice(start + at..start + at + bytes.len());
        at += len;
        Ok(Some(slice))
    };
    let key = field("key")?;
    let value = field("value")?;
    Ok(LegacyMessage { timestamp, log_append_time, key, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: i64, magic: u8, ts: i64, key: Option<&[u8]>, value: &[u8]) -> Vec<u8> {
        let mut m = vec![magic, 0];
        if magic == 1 {
            m.extend_from_slice(&ts.to_be_bytes());
        }
        match key {
            Some(k) => {
                m.extend_from_slice(&(k.len() as i32).to_be_bytes());
                m.extend_from_slice(k);
            }
            None => m.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        m.extend_from_slice(&(value.len() as i32).to_be_bytes());
        m.extend_from_slice(value);
        let mut out = offset.to_be_bytes().to_vec();
        out.extend_from_slice(&((m.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
        out.extend(m);
        out
    }

    #[test]
    fn message_sets_table() {
        let two = [message(150, 1, 900, None, b"a"), message(1, 1, 800, Some(b"k"), b"")].concat();
        let got = parse_message_set(&two.clone().into()).unwrap();
        assert_eq!(got.iter().map(|m| m.timestamp).collect::<Vec<_>>(), vec![900, 800], "timestamps as sent");
        assert_eq!(got[1].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(got[1].value.as_deref(), Some(&b""[..]), "empty is not null");
        assert_eq!(parse_message_set(&message(0, 0, 0, None, b"x").into()).unwrap()[0].timestamp, -1);

        let mut flipped = two.clone();
        flipped[30] ^= 1;
        let truncated = two[..two.len() - 2].to_vec();
        let mut compressed = message(0, 1, 5, None, b"zz");
        compressed[17] = 1; // gzip attribute
        let crc = crc32fast::hash(&compressed[16..]);
        compressed[12..16].copy_from_slice(&crc.to_be_bytes());
        for (case, set, want) in [
            ("flipped byte", flipped, "checksum mismatch"),
            ("truncated", truncated, "runs past the end"),
            ("compressed", compressed, "not supported"),
            ("empty", vec![], "empty message set"),
        ] {
            let err = parse_message_set(&set.into()).unwrap_err();
            assert!(err.contains(want), "{case}: {err}");
        }
    }
}
