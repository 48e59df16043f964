"""Every service's /docs works without internet: Swagger UI's assets come from the service itself."""

import re

import httpx
from faststream.kafka import KafkaBroker

from flywheel.common.service import create_service_app
from flywheel.common.settings import ServiceSettings


async def test_docs_page_loads_its_assets_from_the_service_and_nothing_from_elsewhere():
    app = create_service_app(name="example", settings=ServiceSettings(), broker=KafkaBroker(), checks={})
    # No lifespan: the page and its assets need no broker.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        page = (await client.get("/docs")).text
        assets = re.findall(r"""(?:href|src)=["']([^"']+)["']""", page) + re.findall(r"url: *'([^']+)'", page)
        assert [a for a in assets if a.startswith(("http:", "https:", "//"))] == []
        scripts_and_styles = [a for a in assets if a.endswith((".js", ".css"))]
        assert len(scripts_and_styles) >= 2
        for asset in scripts_and_styles:
            response = await client.get(asset)
            assert response.status_code == 200 and len(response.content) > 10_000, asset
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "flywheel-example"
