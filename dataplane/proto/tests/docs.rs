//! Keeps `docs/wire.md` in sync with the call table: the table between the
//! markers must equal what `render_call_table_markdown` generates. To
//! update, run with `RGPU_BLESS_DOCS=1`.

use rgpu_proto::render_call_table_markdown;

const BEGIN: &str = "<!-- BEGIN CALL TABLE (generated; see tests/docs.rs) -->\n";
const END: &str = "<!-- END CALL TABLE -->";

#[test]
fn wire_doc_call_table_matches_macro() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/wire.md");
    let doc = std::fs::read_to_string(path).expect("docs/wire.md exists");
    let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = doc[start..].find(END).expect("end marker") + start;
    let want = render_call_table_markdown();
    if std::env::var_os("RGPU_BLESS_DOCS").is_some() {
        let fixed = format!("{}{}{}", &doc[..start], want, &doc[end..]);
        std::fs::write(path, fixed).expect("write docs/wire.md");
        return;
    }
    assert_eq!(
        &doc[start..end],
        want,
        "docs/wire.md call table drifted from the call_table! macro; \
         rerun with RGPU_BLESS_DOCS=1"
    );
}
