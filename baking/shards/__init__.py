"""Webdataset shards and the manifest that lists them."""
