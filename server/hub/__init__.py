"""Models from Hugging Face: what a repository holds, downloading it (resumable, verified), the access
token for gated repositories, and adding what was downloaded to the model table.

Every call to the Hub runs in a child process (``process.py``) whose environment says which endpoint to
use and that it is online, whatever the appliance's own process was started with.
"""
