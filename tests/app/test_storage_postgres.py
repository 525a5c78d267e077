"""The app's database on PostgreSQL, as `--db-url postgresql://...` deployments run it (a server of its own, from
`pgserver`). Everything else tests SQLite; here what differs by dialect: a fresh schema, the verbs a chat uses, the
check constraints, and the 1 -> 2 migration, which alters a constraint in place where SQLite rebuilds the table."""

import uuid
from datetime import datetime

import pgserver
import pytest
from sqlalchemy import create_engine, insert, update
from sqlalchemy.exc import IntegrityError

from eve_app.storage import SCHEMA_VERSION, ConversationStore, Database
from eve_app.storage.schema import Base, Feedback, Generation, Message, SchemaVersion

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478da63f8cfc000000301"
    "0100c9fe92ef0000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    server = pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture
def db_url(postgres) -> str:
    """A new, empty database on the module's server."""
    name = "eve_" + uuid.uuid4().hex[:12]
    postgres.psql(f"CREATE DATABASE {name};")
    return postgres.get_uri(name).replace("postgresql://", "postgresql+psycopg2://", 1)


def test_a_fresh_database_holds_a_chat(db_url, tmp_path):
    database = Database(db_url, data_dir=tmp_path)
    assert database.schema_version == SCHEMA_VERSION
    storage = ConversationStore(database)
    saved = storage.save_question(None, "Read this", task="OCR", images=[(PNG, "a.png")], owner="browser:a")
    conversation_id = saved.conversation_id
    assert len(saved.image_paths) == 1
    answer = storage.begin_answer(conversation_id, task="OCR")
    storage.save_partial_answer(answer, "HEL")
    storage.finish_answer(answer, "HELLO", "done", record={"model": "eve-tiny"})
    storage.save_feedback(answer, "like", owner="browser:a")
    assert [c["id"] for c in storage.list_conversations(search="read", owner="browser:a")] == [conversation_id]
    assert storage.list_conversations(owner="browser:b") == []
    messages = storage.get_conversation(conversation_id, owner="browser:a")["messages"]
    assert [(m["text"], m["status"]) for m in messages] == [("Read this", "ok"), ("HELLO", "done")]
    assert messages[1]["feedback"] == "like" and messages[1]["generation"]["model"] == "eve-tiny"
    with pytest.raises(IntegrityError, match="ck_messages_status"), database.engine.begin() as connection:
        connection.execute(update(Message).where(Message.id == answer).values(status="nonsense"))
    database.close()
    assert Database(db_url, data_dir=tmp_path).schema_version == SCHEMA_VERSION  # reopening changes nothing


def version_1_database(url: str) -> None:
    """A database as version 1 of the app made it on PostgreSQL: no conversation owners, and answers only done,
    stopped or error; with one old conversation, its feedback and its generation record."""
    engine = create_engine(url)
    old = datetime(2026, 1, 1)
    with engine.begin() as connection:
        Base.metadata.create_all(connection)
        connection.exec_driver_sql("ALTER TABLE conversations DROP COLUMN owner")
        connection.exec_driver_sql("ALTER TABLE messages DROP CONSTRAINT ck_messages_status")
        connection.exec_driver_sql(
            "ALTER TABLE messages ADD CONSTRAINT ck_messages_status CHECK (status IN ('ok', 'done', 'stopped', 'error'))"
        )
        connection.execute(insert(SchemaVersion).values(version=1))
        # Ids come from the tables' sequences, as the old app's inserts took them.
        connection.exec_driver_sql(
            "INSERT INTO conversations (title, task, created_at, updated_at, deleted) "
            "VALUES ('Old chat', 'OCR', '2026-01-01', '2026-01-01', false)"
        )
        ids = [
            connection.execute(
                insert(Message)
                .values(conversation_id=1, role=role, text=text, task="OCR", position=position, status=status,
                        hidden=False, created_at=old)
                .returning(Message.id)
            ).scalar_one()
            for position, (role, text, status) in enumerate([("user", "Read it", "ok"), ("assistant", "HELLO", "done")])
        ]  # fmt: skip
        connection.execute(insert(Feedback).values(message_id=ids[1], value="like", created_at=old))
        connection.execute(
            insert(Generation).values(
                message_id=ids[1], model="eve-tiny", parameters={}, status="done", created_at=old
            )
        )
    engine.dispose()


def test_a_version_1_database_migrates_in_place(db_url, tmp_path):
    version_1_database(db_url)
    database = Database(db_url, data_dir=tmp_path)
    assert database.schema_version == SCHEMA_VERSION
    storage = ConversationStore(database)
    assert storage.list_conversations(owner="browser:visitor") == []  # old rows belong to the admin
    old = storage.get_conversation(1, owner="admin")
    assert [m["text"] for m in old["messages"]] == ["Read it", "HELLO"] and old["messages"][1]["feedback"] == "like"
    assert old["messages"][1]["generation"]["model"] == "eve-tiny"
    answer = storage.begin_answer(1, task="OCR")  # the widened constraint takes the new answer states
    storage.save_partial_answer(answer, "partial")
    assert storage.get_conversation(1)["messages"][-1]["status"] == "streaming"
    # ... and still refuses the rest.
    with pytest.raises(IntegrityError, match="ck_messages_status"), database.engine.begin() as connection:
        connection.execute(update(Message).where(Message.id == 1).values(status="nonsense"))
    database.close()
