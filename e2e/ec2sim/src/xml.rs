//! XML documents as EC2 writes them: `<{Action}Response xmlns=…><requestId>` for success and
//! `<Response><Errors><Error>…</Error></Errors><RequestID>` for errors. A tiny writer instead of
//! serde, because EC2's shapes (`…Set` wrappers with `<item>` members) map poorly onto derive.

use std::fmt::{Display, Write};

/// EC2's API namespace.
pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Escapes text and attribute content.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// A success document under construction.
pub struct Xml {
    buf: String,
    root: String,
}

impl Xml {
    /// Starts `<{action}Response>` with the request id.
    pub fn response(action: &str, request_id: &str) -> Xml {
        let root = format!("{action}Response");
        let mut buf = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = write!(
            buf,
            "<{root} xmlns=\"{NAMESPACE}\"><requestId>{}</requestId>",
            escape(request_id)
        );
        Xml { buf, root }
    }

    pub fn open(&mut self, tag: &str) -> &mut Self {
        let _ = write!(self.buf, "<{tag}>");
        self
    }

    pub fn close(&mut self, tag: &str) -> &mut Self {
        let _ = write!(self.buf, "</{tag}>");
        self
    }

    pub fn leaf(&mut self, tag: &str, v: impl Display) -> &mut Self {
        let _ = write!(self.buf, "<{tag}>{}</{tag}>", escape(&v.to_string()));
        self
    }

    /// Text inside the open element (a list of plain values is `<item>text</item>`).
    pub fn text(&mut self, v: impl Display) -> &mut Self {
        self.buf.push_str(&escape(&v.to_string()));
        self
    }

    /// A text element when there is a value.
    pub fn opt(&mut self, tag: &str, v: Option<impl Display>) -> &mut Self {
        if let Some(v) = v {
            self.leaf(tag, v);
        }
        self
    }

    /// `<tag><item>…</item>…</tag>`, the shape of every EC2 list.
    pub fn items<T>(
        &mut self,
        tag: &str,
        items: impl IntoIterator<Item = T>,
        mut f: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        self.open(tag);
        for it in items {
            self.open("item");
            f(self, it);
            self.close("item");
        }
        self.close(tag)
    }

    /// `tagSet` of key/value items.
    pub fn tag_set(&mut self, tags: &std::collections::BTreeMap<String, String>) -> &mut Self {
        self.items("tagSet", tags, |x, (k, v)| {
            x.leaf("key", k).leaf("value", v);
        })
    }

    /// Closes the root and returns the document.
    pub fn finish(mut self) -> String {
        let _ = write!(self.buf, "</{}>", self.root);
        self.buf
    }
}

pub fn error_document(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        escape(code),
        escape(message),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        let mut x = Xml::response("DeleteTags", "r-1");
        x.leaf("return", true);
        assert!(x
            .finish()
            .ends_with("<requestId>r-1</requestId><return>true</return></DeleteTagsResponse>"));
        assert!(
            error_document("A<", "m&", "r").contains("<Code>A&lt;</Code><Message>m&amp;</Message>")
        );
    }
}
