"""What lets a file go unread: a listing row binds listing metadata, options and digest together."""

from __future__ import annotations

from airflow_provider_milvus.core.files import Listed
from airflow_provider_milvus.core.ledger import digest_options, digest_prefix, listing_digest
from airflow_provider_milvus.core.listing import shard_of, unread_documents


def prefix(**changes):
    options = dict(chunk_size=500, chunk_overlap=50, id_key=None, identity={"kind": "openai", "model": "m"})
    return digest_prefix("source", digest_options(**{**options, **changes}))


def test_a_listing_row_changes_with_the_listing_the_options_and_the_digest():
    row = listing_digest(prefix(), '{"etag": "a", "size": 1}', "d" * 64)
    assert listing_digest(prefix(), '{"etag": "a", "size": 1}', "d" * 64) == row
    assert listing_digest(prefix(), '{"etag": "b", "size": 1}', "d" * 64) != row
    assert listing_digest(prefix(), '{"etag": "a", "size": 1}', "e" * 64) != row
    assert listing_digest(prefix(chunk_size=400), '{"etag": "a", "size": 1}', "d" * 64) != row
    assert (
        listing_digest(prefix(identity={"kind": "openai", "model": "n"}), '{"etag": "a", "size": 1}', "d" * 64) != row
    )


def test_an_unread_file_travels_as_its_source_digest_listing_and_path_without_text(tmp_path):
    listed = [Listed("a.md", tmp_path / "a.md", '{"size": 1}'), Listed("b.md", tmp_path / "b.md", '{"size": 2}')]
    assert unread_documents(listed, {"a.md": "d" * 64}) == [
        {
            "page_content": "",
            "metadata": {"source": "a.md"},
            "unread": "d" * 64,
            "path": str(tmp_path / "a.md"),
            "listing": '{"size": 1}',
        }
    ]


def test_a_source_keeps_its_shard_across_processes():
    # SHA-256 of the name, not Python's salted hash(): every worker computes the same shard.
    assert [shard_of(f"doc{i}.md", 4) for i in range(8)] == [shard_of(f"doc{i}.md", 4) for i in range(8)]
    assert {shard_of(f"doc{i}.md", 4) for i in range(64)} == {0, 1, 2, 3}
    assert shard_of("docs/a.md", 4) == 2  # pinned: a new hash would move sources between shards on upgrade


def test_a_file_is_unchanged_only_when_its_listing_row_binds_its_listing_to_its_entry():
    from airflow_provider_milvus.core.ledger import source_key
    from airflow_provider_milvus.core.listing import LedgerListing

    digest, listing = "d" * 64, '{"etag": "a", "size": 1}'
    known = LedgerListing(
        prefix(),
        digests={source_key(s): digest for s in ("same.md", "edited.md", "no-row.md", "unlisted.md")},
        listings={source_key(s): listing_digest(prefix(), listing, digest) for s in ("same.md", "edited.md")},
    )
    listed = [
        Listed("same.md", None, listing),
        Listed("edited.md", None, '{"etag": "b", "size": 1}'),
        Listed("no-row.md", None, listing),
        Listed("unlisted.md", None, None),  # no listing metadata: always read
        Listed("new.md", None, listing),
    ]
    assert known.unchanged(listed) == {"same.md": digest}
    other_options = LedgerListing(prefix(chunk_size=400), known.digests, known.listings)
    assert other_options.unchanged(listed) == {}
