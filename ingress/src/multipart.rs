//! A `multipart/form-data` reader for uploads (`/v1/audio/transcriptions`):
//! the whole body is already in memory, bounded by the route's limit.
//!
//! Invariants: any body and content type give fields or a
//! [`MultipartError`], never a panic; a form written as browsers and HTTP
//! clients write one (quoted parameters, which may hold `;` and `=`) reads
//! back to exactly its fields.

use bytes::Bytes;

/// One field of a form.
#[derive(Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

impl Field {
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
}

/// Why a body is not a readable form.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("the Content-Type must be multipart/form-data with a boundary")]
    NotMultipart,
    #[error("the multipart body is malformed")]
    Malformed,
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    split_params(params).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| unquote(v).to_string())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

/// The `;`-separated items of a header value; a `;` inside a quoted value
/// (`filename="a;b.wav"`) does not separate.
fn split_params(value: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    value.split(move |c| {
        if c == '"' {
            quoted = !quoted;
        }
        c == ';' && !quoted
    })
}

/// A parameter value without its quotes. Inside quotes everything up to the
/// closing quote is the value: browsers percent-encode quotes in names and
/// file names (WHATWG's multipart/form-data encoding), so no escapes are read.
fn unquote(value: &str) -> &str {
    let value = value.trim();
    match value.strip_prefix('"') {
        Some(inner) => inner.split('"').next().unwrap_or(inner),
        None => value,
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= haystack.len() {
        let at = haystack[i..].iter().position(|&b| b == first)? + i;
        if haystack.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// A header parameter such as `name="file"` of a Content-Disposition.
fn param(disposition: &str, key: &str) -> Option<String> {
    split_params(disposition).skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| unquote(v).to_string())
    })
}

/// Reads every field of a form.
pub fn parse(content_type: &str, body: &Bytes) -> Result<Vec<Field>, MultipartError> {
    let boundary = boundary(content_type).ok_or(MultipartError::NotMultipart)?;
    let delimiter = format!("--{boundary}");
    let next_delimiter = format!("\r\n--{boundary}");
    let mut pos =
        find(body, delimiter.as_bytes(), 0).ok_or(MultipartError::Malformed)? + delimiter.len();
    let mut fields = Vec::new();
    loop {
        let rest = body.get(pos..).ok_or(MultipartError::Malformed)?;
        if rest.starts_with(b"--") {
            return Ok(fields);
        }
        if !rest.starts_with(b"\r\n") {
            return Err(MultipartError::Malformed);
        }
        pos += 2;
        let headers_end = find(body, b"\r\n\r\n", pos).ok_or(MultipartError::Malformed)?;
        let headers =
            std::str::from_utf8(&body[pos..headers_end]).map_err(|_| MultipartError::Malformed)?;
        let mut name = None;
        let mut filename = None;
        let mut part_type = None;
        for line in headers.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("content-disposition") {
                name = param(value, "name");
                filename = param(value, "filename");
            } else if key.trim().eq_ignore_ascii_case("content-type") {
                part_type = Some(value.trim().to_string());
            }
        }
        let start = headers_end + 4;
        let end = find(body, next_delimiter.as_bytes(), start).ok_or(MultipartError::Malformed)?;
        fields.push(Field {
            name: name.ok_or(MultipartError::Malformed)?,
            filename,
            content_type: part_type,
            data: body.slice(start..end),
        });
        pos = end + next_delimiter.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_and_file_fields() {
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
              --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--\x00\xff\r\n\
              --XyZ--\r\n",
        );
        let fields = parse("multipart/form-data; boundary=\"XyZ\"", &body).unwrap();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].name, "model");
        assert_eq!(fields[0].text(), Some("whisper-1"));
        assert_eq!(fields[1].filename.as_deref(), Some("a.wav"));
        assert_eq!(fields[1].content_type.as_deref(), Some("audio/wav"));
        assert_eq!(fields[1].data.as_ref(), b"RIFF\r\n--\x00\xff");
    }

    #[test]
    fn refuses_what_is_not_a_form() {
        let body = Bytes::from_static(b"{}");
        assert_eq!(
            parse("application/json", &body),
            Err(MultipartError::NotMultipart)
        );
        assert_eq!(
            parse("multipart/form-data; boundary=b", &body),
            Err(MultipartError::Malformed)
        );
        let cut =
            Bytes::from_static(b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nno end");
        assert_eq!(
            parse("multipart/form-data; boundary=b", &cut),
            Err(MultipartError::Malformed)
        );
    }

    /// Found by the properties: a `;` inside a quoted parameter cut it short
    /// (`filename="a;b.wav"` read as `a`), and could even rename a field.
    #[test]
    fn quoted_parameters_keep_their_semicolons() {
        let body = Bytes::from_static(
            b"--b\r\nContent-Disposition: form-data; filename=\"x; name=model.wav\"; name=\"file\"\r\n\r\nRIFF\r\n--b--\r\n",
        );
        let fields = parse("multipart/form-data; boundary=\"b\"", &body).unwrap();
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].name, "file");
        assert_eq!(fields[0].filename.as_deref(), Some("x; name=model.wav"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// RFC 2046 boundary characters (no space: it may not end one).
        fn boundary_text() -> impl Strategy<Value = String> {
            "[0-9A-Za-z'()+_,./:=?-]{1,70}"
        }

        /// A name or file name as clients encode it: any text but `"`, CR
        /// and LF (which they percent-encode).
        fn param_text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z_]{1,10}",
                "[^\"\r\n]{0,12}",
                Just("a;b=c.wav".to_string()),
            ]
        }

        #[derive(Debug, Clone)]
        struct FormField {
            name: String,
            filename: Option<String>,
            content_type: Option<String>,
            data: Vec<u8>,
        }

        fn form_field() -> impl Strategy<Value = FormField> {
            (
                param_text(),
                prop::option::of(param_text()),
                prop::option::of("[a-z]{1,8}/[a-z0-9.+-]{1,8}(; charset=utf-8)?"),
                prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..64),
                    Just(b"\r\n--\r\n\r\n--".to_vec()),
                ],
            )
                .prop_map(|(name, filename, content_type, data)| FormField {
                    name,
                    filename,
                    content_type,
                    data,
                })
        }

        /// A form as a client writes it, with its content type.
        #[derive(Debug, Clone)]
        struct Form {
            boundary: String,
            quoted: bool,
            fields: Vec<FormField>,
            /// Content-Disposition after Content-Type, lower-case names.
            reordered: bool,
            preamble: bool,
        }

        fn form() -> impl Strategy<Value = Form> {
            (
                boundary_text(),
                any::<bool>(),
                prop::collection::vec(form_field(), 0..4),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(boundary, quoted, fields, reordered, preamble)| Form {
                    boundary,
                    quoted,
                    fields,
                    reordered,
                    preamble,
                })
                // The boundary must not occur in the data (clients pick
                // one that does not).
                .prop_filter("the boundary occurs in a field", |f| {
                    let delimiter = format!("\r\n--{}", f.boundary);
                    f.fields.iter().all(|x| {
                        !x.data
                            .windows(delimiter.len())
                            .any(|w| w == delimiter.as_bytes())
                    })
                })
        }

        impl Form {
            fn content_type(&self) -> String {
                if self.quoted {
                    format!("multipart/form-data; boundary=\"{}\"", self.boundary)
                } else {
                    format!("multipart/form-data;boundary={}", self.boundary)
                }
            }

            fn body(&self) -> Bytes {
                let mut out = Vec::new();
                if self.preamble {
                    out.extend_from_slice(b"This is a preamble.\r\n");
                }
                for f in &self.fields {
                    out.extend_from_slice(format!("--{}\r\n", self.boundary).as_bytes());
                    let mut disposition = format!("form-data; name=\"{}\"", f.name);
                    if let Some(filename) = &f.filename {
                        disposition.push_str(&format!("; filename=\"{filename}\""));
                    }
                    let (cd, ct) = if self.reordered {
                        ("content-disposition", "content-type")
                    } else {
                        ("Content-Disposition", "Content-Type")
                    };
                    let mut headers = vec![format!("{cd}: {disposition}")];
                    if let Some(t) = &f.content_type {
                        headers.push(format!("{ct}: {t}"));
                    }
                    if self.reordered {
                        headers.reverse();
                    }
                    for h in headers {
                        out.extend_from_slice(format!("{h}\r\n").as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&f.data);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(format!("--{}--{EPILOGUE}", self.boundary).as_bytes());
                Bytes::from(out)
            }
        }

        const EPILOGUE: &str = "\r\nepilogue";

        /// Bytes made of multipart syntax and garbage.
        fn noisy_body(boundary: String) -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                3 => prop::sample::select(vec![
                    "--", "\r\n", "\r\n\r\n", "Content-Disposition: form-data; name=\"f\"",
                    "; filename=\"a;b\"", "Content-Type: text/plain", "name=", "\"", ";", ":",
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                2 => Just(boundary.into_bytes()),
                1 => prop::collection::vec(any::<u8>(), 0..16),
            ];
            prop::collection::vec(piece, 0..32).prop_map(|p| p.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn generated_forms_parse_back_to_their_fields(form in form()) {
                let fields = parse(&form.content_type(), &form.body()).unwrap();
                let expected: Vec<Field> = form
                    .fields
                    .iter()
                    .map(|f| Field {
                        name: f.name.clone(),
                        filename: f.filename.clone(),
                        content_type: f.content_type.clone(),
                        data: Bytes::from(f.data.clone()),
                    })
                    .collect();
                prop_assert_eq!(fields, expected);
            }

            #[test]
            fn any_body_and_content_type_give_fields_or_an_error(
                (content_type, body) in prop_oneof![
                    boundary_text().prop_flat_map(|b| {
                        let ct = format!("multipart/form-data; boundary={b}");
                        noisy_body(b).prop_map(move |body| (ct.clone(), body))
                    }),
                    ("(?s).{0,40}", prop::collection::vec(any::<u8>(), 0..128)),
                ],
            ) {
                let body = Bytes::from(body);
                let within = body.as_ptr_range();
                for f in parse(&content_type, &body).unwrap_or_default() {
                    // Each field's data is a piece of the body.
                    let data = f.data.as_ptr_range();
                    prop_assert!(
                        f.data.is_empty()
                            || (within.start <= data.start && data.end <= within.end)
                    );
                }
            }

            /// Only a cut in the epilogue leaves a readable form (with
            /// every field); anywhere before, the form is malformed.
            #[test]
            fn a_form_cut_before_its_end_is_malformed(form in form(), cut in any::<prop::sample::Index>()) {
                let body = form.body();
                let cut = cut.index(body.len());
                let complete = body.len() - EPILOGUE.len();
                match parse(&form.content_type(), &body.slice(..cut)) {
                    Ok(fields) => {
                        prop_assert!(cut >= complete, "a form cut at {} read as {:?}", cut, fields);
                        prop_assert_eq!(fields.len(), form.fields.len());
                    }
                    Err(e) => {
                        prop_assert!(cut < complete, "cut at {} in the epilogue: {:?}", cut, e);
                        prop_assert_eq!(e, MultipartError::Malformed);
                    }
                }
            }
        }
    }
}
