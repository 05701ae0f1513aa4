"""What the user sees: the one console (`console`), rank tables and attach's live view."""
