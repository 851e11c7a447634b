"""Both log streams are created idempotently, immutable, and a mismatch is reported clearly."""

from __future__ import annotations

import nats
import pytest
from nats.js import api as jsapi
from nats.js.errors import APIError

from broker import streams
from broker.server import EmbeddedNats


async def test_created_idempotently_and_immutable(tmp_path) -> None:
    with EmbeddedNats(data_dir=tmp_path / "n") as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await streams.ensure_streams(js)
        await streams.ensure_streams(js)
        info = await js.stream_info(streams.CONTROL.name)
        assert info.config.deny_delete and info.config.deny_purge
        ack = await js.publish("kg.evt.user.alice", b"{}")
        with pytest.raises(APIError) as deleted:
            await js.delete_msg(streams.CONTROL.name, ack.seq)
        assert deleted.value.err_code == 10057
        with pytest.raises(APIError) as purged:
            await js.purge_stream(streams.CONTROL.name)
        assert purged.value.err_code == 10110
        await nc.close()


async def test_mismatching_stream_is_reported(tmp_path) -> None:
    with EmbeddedNats(data_dir=tmp_path / "n") as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(
            jsapi.StreamConfig(
                name=streams.ACTIVITY.name,
                subjects=["kg.act.>"],
                storage=jsapi.StorageType.MEMORY,
            )
        )
        with pytest.raises(streams.StreamMismatchError) as err:
            await streams.ensure_streams(js)
        assert err.value.stream == streams.ACTIVITY.name
        assert "storage" in err.value.differences
        assert "deny_delete" in str(err.value)
        await nc.close()


def test_stream_names_and_subjects_do_not_overlap() -> None:
    assert len({s.name for s in streams.ALL}) == len(streams.ALL)
    assert not set(streams.CONTROL.subjects) & set(streams.ACTIVITY.subjects)
