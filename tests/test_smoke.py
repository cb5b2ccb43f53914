from confman import ConfigHub
from confman.managers import CacheConfigurationManager


async def test_update_and_read(hub: ConfigHub) -> None:
    cache = hub.manager(CacheConfigurationManager)
    change = await cache.update({"default_ttl_seconds": 60}, actor="ops")
    assert change.version == 1
    assert cache.current.default_ttl_seconds == 60
