"""The operator's dashboard: login, the page and its assets, the doctor endpoints, "try it"."""
