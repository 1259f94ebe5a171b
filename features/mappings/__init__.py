"""Mapping files shipped with leadscore: one per public data set (package data, see features/mapping/)."""
