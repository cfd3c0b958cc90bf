"""A remote MCP server built with fastmcp, for the namespace and visibility tests:
`python remote_server.py PORT` serves Streamable HTTP on 127.0.0.1:PORT/mcp."""

import sys
from fastmcp import FastMCP

mcp = FastMCP("docs")

@mcp.tool
def search(query: str) -> str:
    """Search the documentation."""
    return f"found: {query}"

@mcp.tool(name="page.get")
def page_get(id: int) -> dict:
    """Get a documentation page by id."""
    return {"id": id, "title": f"Page {id}"}

if __name__ == "__main__":
    mcp.run(transport="http", host="127.0.0.1", port=int(sys.argv[1]))
