"""The hooking core: sites, recording, channel rules, edits, masks, row layouts. Imports only ditlens.adapters."""
