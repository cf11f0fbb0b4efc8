"""The sweep-file model: loading and validating a sweep file, expanding its grid into trial specs."""
