//! Splitting f32 vectors into little-endian byte chunks and joining them back,
//! with the checks that keep a malformed stream from reaching the core.

use thiserror::Error;

/// Why a chunked vector could not be reassembled.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk's byte length is not a multiple of four.
    #[error("chunk at offset {offset} has {bytes} bytes, not a multiple of 4")]
    RaggedChunk {
        /// Parameter offset the chunk claimed.
        offset: u64,
        /// Its byte length.
        bytes: usize,
    },
    /// The chunk does not continue where the previous one ended.
    #[error("chunk starts at parameter {got}, expected {expected}")]
    OutOfOrder {
        /// Where the next chunk had to start.
        expected: u64,
        /// Where it started.
        got: u64,
    },
    /// More values arrived than were announced.
    #[error("received more than the announced {announced} values")]
    TooLong {
        /// Values announced in the header.
        announced: u64,
    },
    /// The stream ended before every announced value arrived.
    #[error("stream ended after {received} of {announced} values")]
    TooShort {
        /// Values received.
        received: u64,
        /// Values announced.
        announced: u64,
    },
    /// The announced length exceeds what this side is willing to hold.
    #[error("announced {announced} values, above the limit of {limit}")]
    OverLimit {
        /// Values announced.
        announced: u64,
        /// The limit.
        limit: u64,
    },
}

/// Encodes a slice of f32 as little-endian bytes.
pub fn encode_values(values: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for value in values {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// Reassembles a vector from chunks that must arrive in order.
#[derive(Debug)]
pub struct VectorAssembler {
    announced: u64,
    values: Vec<f32>,
}

impl VectorAssembler {
    /// Prepares for `announced` values, refusing more than `limit`.
    pub fn new(announced: u64, limit: u64) -> Result<Self, ChunkError> {
        if announced > limit {
            return Err(ChunkError::OverLimit { announced, limit });
        }
        // The announced length is bounded by `limit`, so reserving it is safe.
        let capacity = usize::try_from(announced).unwrap_or(0);
        Ok(Self {
            announced,
            values: Vec::with_capacity(capacity),
        })
    }

    /// Appends one chunk; `offset` must equal the number of values so far.
    pub fn push(&mut self, offset: u64, bytes: &[u8]) -> Result<(), ChunkError> {
        if bytes.len() % 4 != 0 {
            return Err(ChunkError::RaggedChunk {
                offset,
                bytes: bytes.len(),
            });
        }
        let received = self.values.len() as u64;
        if offset != received {
            return Err(ChunkError::OutOfOrder {
                expected: received,
                got: offset,
            });
        }
        if received + (bytes.len() / 4) as u64 > self.announced {
            return Err(ChunkError::TooLong {
                announced: self.announced,
            });
        }
        self.values.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        Ok(())
    }

    /// Values received so far.
    pub fn received(&self) -> u64 {
        self.values.len() as u64
    }

    /// Returns the vector once every announced value has arrived.
    pub fn finish(self) -> Result<Vec<f32>, ChunkError> {
        let received = self.values.len() as u64;
        if received != self.announced {
            return Err(ChunkError::TooShort {
                received,
                announced: self.announced,
            });
        }
        Ok(self.values)
    }
}

/// Iterates `(offset, bytes)` chunks of at most `values_per_chunk` values.
pub fn chunks(
    values: &[f32],
    values_per_chunk: usize,
) -> impl Iterator<Item = (u64, Vec<u8>)> + '_ {
    values
        .chunks(values_per_chunk.max(1))
        .enumerate()
        .map(move |(index, chunk)| {
            (
                (index * values_per_chunk.max(1)) as u64,
                encode_values(chunk),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_over_several_chunks() {
        let values: Vec<f32> = (0..10_007).map(|i| i as f32 * 0.5 - 3.0).collect();
        let mut assembler = VectorAssembler::new(values.len() as u64, 1 << 30).unwrap();
        for (offset, bytes) in chunks(&values, 1000) {
            assembler.push(offset, &bytes).unwrap();
        }
        assert_eq!(assembler.finish().unwrap(), values);
    }

    #[test]
    fn malformed_streams_are_named() {
        let mut assembler = VectorAssembler::new(4, 100).unwrap();
        assert_eq!(
            assembler.push(0, &[0; 5]),
            Err(ChunkError::RaggedChunk {
                offset: 0,
                bytes: 5
            })
        );
        assert_eq!(
            assembler.push(1, &[0; 4]),
            Err(ChunkError::OutOfOrder {
                expected: 0,
                got: 1
            })
        );
        assembler.push(0, &[0; 8]).unwrap();
        assert_eq!(
            assembler.push(2, &[0; 12]),
            Err(ChunkError::TooLong { announced: 4 })
        );
        assert_eq!(
            assembler.finish(),
            Err(ChunkError::TooShort {
                received: 2,
                announced: 4
            })
        );
        assert_eq!(
            VectorAssembler::new(101, 100).unwrap_err(),
            ChunkError::OverLimit {
                announced: 101,
                limit: 100
            }
        );
    }
}
