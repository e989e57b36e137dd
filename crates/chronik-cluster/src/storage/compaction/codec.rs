//! The record codecs Kafka defines (gzip, snappy, lz4, zstd), for the two places the broker
//! must look inside a compressed batch: compaction (which keys it holds) and produce
//! validation on compacted topics (every record has a key). Decompression is bounded: a small
//! hostile batch that claims or expands to more than `limit` bytes is refused, not expanded.

use std::io::{Read, Write};

/// Why a batch's records could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("compression codec {0} does not exist")]
    UnknownCodec(u8),
    #[error("records expand to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{codec} data is malformed: {reason}")]
    Malformed { codec: &'static str, reason: String },
}

pub const NONE: u8 = 0;
const GZIP: u8 = 1;
const SNAPPY: u8 = 2;
const LZ4: u8 = 3;
const ZSTD: u8 = 4;

/// snappy-java's stream header, which Kafka's Java client writes (and most clients follow);
/// without it the data is one raw snappy block.
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// snappy-java's block size, so what Chronik writes reads back in Java clients.
const XERIAL_BLOCK: usize = 32 * 1024;

fn codec_name(codec: u8) -> &'static str {
    match codec {
        GZIP => "gzip",
        SNAPPY => "snappy",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "none",
    }
}

fn malformed(codec: u8) -> impl Fn(std::io::Error) -> CodecError {
    move |e| CodecError::Malformed { codec: codec_name(codec), reason: e.to_string() }
}

/// The records section of a batch compressed with `codec`, at most `limit` bytes of it.
pub fn decompress(codec: u8, data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    match codec {
        NONE => bounded_read(data, limit, codec),
        GZIP => bounded_read(flate2::read::GzDecoder::new(data), limit, codec),
        SNAPPY => snappy_decompress(data, limit),
        LZ4 => bounded_read(lz4::Decoder::new(data).map_err(malformed(codec))?, limit, codec),
        ZSTD => bounded_read(zstd::stream::read::Decoder::new(data).map_err(malformed(codec))?, limit, codec),
        other => Err(CodecError::UnknownCodec(other)),
    }
}

/// `records` compressed with `codec`. The output is a function of the input (fixed levels,
/// no timestamps), so every replica that compresses the same records writes the same bytes.
pub fn compress(codec: u8, records: &[u8]) -> Result<Vec<u8>, CodecError> {
    let out = match codec {
        NONE => Ok(records.to_vec()),
        GZIP => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(records).and_then(|()| e.finish())
        }
        SNAPPY => return snappy_compress(records),
        LZ4 => (|| {
            let mut e = lz4::EncoderBuilder::new().level(4).block_mode(lz4::BlockMode::Independent).build(Vec::new())?;
            e.write_all(records)?;
            let (out, result) = e.finish();
            result.map(|()| out)
        })(),
        ZSTD => zstd::stream::encode_all(records, 3),
        other => return Err(CodecError::UnknownCodec(other)),
    };
    out.map_err(malformed(codec))
}

fn bounded_read(reader: impl Read, limit: usize, codec: u8) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(malformed(codec))?;
    if out.len() > limit {
        return Err(CodecError::TooLarge { limit });
    }
    Ok(out)
}

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let bad = |reason: &str| CodecError::Malformed { codec: "snappy", reason: reason.to_string() };
    let raw_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), CodecError> {
        let len = snap::raw::decompress_len(block).map_err(|e| bad(&e.to_string()))?;
        // The claimed length is checked before anything is allocated for it.
        if out.len() + len > limit {
            return Err(CodecError::TooLarge { limit });
        }
        let at = out.len();
        out.resize(at + len, 0);
        snap::raw::Decoder::new().decompress(block, &mut out[at..]).map_err(|e| bad(&e.to_string()))?;
        Ok(())
    };
    let mut out = Vec::new();
    let Some(mut rest) = data.strip_prefix(XERIAL_MAGIC.as_slice()) else {
        raw_block(data, &mut out)?;
        return Ok(out);
    };
    while !rest.is_empty() {
        let len = rest.get(..4).ok_or_else(|| bad("truncated block length"))?;
        let len = u32::from_be_bytes(len.try_into().expect("four bytes")) as usize;
        let block = rest.get(4..4 + len).ok_or_else(|| bad("block runs past the data"))?;
        raw_block(block, &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

fn snappy_compress(records: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut out = XERIAL_MAGIC.to_vec();
    let mut encoder = snap::raw::Encoder::new();
    for chunk in records.chunks(XERIAL_BLOCK) {
        let block = encoder
            .compress_vec(chunk)
            .map_err(|e| CodecError::Malformed { codec: "snappy", reason: e.to_string() })?;
        out.extend_from_slice(&(block.len() as u32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_is_bounded() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let packed = compress(codec, &data).unwrap();
            assert_eq!(packed, compress(codec, &data).unwrap(), "{}: deterministic", codec_name(codec));
            assert_eq!(decompress(codec, &packed, data.len()).unwrap(), data, "{}", codec_name(codec));
            assert_eq!(
                decompress(codec, &packed, data.len() - 1),
                Err(CodecError::TooLarge { limit: data.len() - 1 }),
                "{}: one byte over the limit is refused",
                codec_name(codec)
            );
        }
        assert_eq!(decompress(7, b"x", 10), Err(CodecError::UnknownCodec(7)));
    }

    #[test]
    fn a_bomb_is_refused_without_expanding_it() {
        let zeros = vec![0u8; 64 << 20];
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            let bomb = compress(codec, &zeros).unwrap();
            assert!(bomb.len() < 4 << 20, "{}: {} bytes", codec_name(codec), bomb.len());
            assert_eq!(decompress(codec, &bomb, 1 << 20), Err(CodecError::TooLarge { limit: 1 << 20 }));
        }
        // A raw snappy block claiming 4 GiB is refused by its header alone.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0];
        assert_eq!(decompress(SNAPPY, &claim, 1 << 20), Err(CodecError::TooLarge { limit: 1 << 20 }));
    }

    #[test]
    fn malformed_data_is_an_error() {
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            assert!(matches!(decompress(codec, b"not compressed at all", 1 << 20), Err(CodecError::Malformed { .. })));
        }
    }
}
