//! The OpenAI embeddings answer, as serde types: a list of vectors (floats, or base64 when
//! the client asked for `encoding_format: base64`) and the prompt's usage.

use serde::{Deserialize, Serialize};

/// `list` of embeddings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    #[serde(default = "list")]
    pub object: String,
    #[serde(default)]
    pub data: Vec<Embedding>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub usage: EmbeddingUsage,
}

/// One input's vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    #[serde(default = "embedding")]
    pub object: String,
    #[serde(default)]
    pub index: u32,
    pub embedding: Vector,
}

/// A vector: floats, or their little-endian f32 bytes in base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Vector {
    Floats(Vec<f64>),
    Base64(String),
}

/// The tokens of the input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

fn list() -> String {
    "list".into()
}

fn embedding() -> String {
    "embedding".into()
}

impl Embeddings {
    /// The float vectors, in order, for `model`.
    pub fn of(vectors: impl IntoIterator<Item = Vec<f64>>, model: &str, prompt_tokens: u64) -> Embeddings {
        Embeddings {
            object: list(),
            data: vectors
                .into_iter()
                .enumerate()
                .map(|(i, v)| Embedding {
                    object: embedding(),
                    index: i as u32,
                    embedding: Vector::Floats(v),
                })
                .collect(),
            model: model.to_owned(),
            usage: EmbeddingUsage {
                prompt_tokens,
                total_tokens: prompt_tokens,
            },
        }
    }
}
