//! `multipart/form-data` bodies, for providers that take uploads or form
//! fields (OpenAI transcriptions, Stability image generation).
//!
//! Invariants: every body ends with its closing boundary, the boundary is
//! unique per body (a UUID v7), and a file name cannot break out of its
//! header (quotes and line breaks are replaced).

use bytes::Bytes;

/// One field of a `multipart/form-data` body.
pub enum Part {
    Text(String),
    File {
        filename: String,
        content_type: String,
        bytes: Bytes,
    },
}

/// A `multipart/form-data` body and its content type (with the boundary).
pub fn multipart(fields: &[(&str, Part)]) -> (String, Vec<u8>) {
    let boundary = format!("aigw-{}", uuid::Uuid::now_v7().simple());
    let mut out = Vec::new();
    for (name, part) in fields {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match part {
            Part::Text(value) => {
                out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
                out.extend_from_slice(value.as_bytes());
            }
            Part::File {
                filename,
                content_type,
                bytes,
            } => {
                let filename = filename.replace(['"', '\r', '\n'], "_");
                out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(bytes);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_are_well_formed() {
        let (ct, body) = multipart(&[
            ("prompt", Part::Text("a cat".into())),
            (
                "file",
                Part::File {
                    filename: "a\"b.wav".into(),
                    content_type: "audio/wav".into(),
                    bytes: Bytes::from_static(b"RIFF"),
                },
            ),
        ]);
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"prompt\"\r\n\r\na cat\r\n"));
        assert!(text.contains(
            "name=\"file\"; filename=\"a_b.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n"
        ));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }
}
