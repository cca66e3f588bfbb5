"""What users author: agents (`@agent`), tools (`@tool`), flows (files and registration) and the
approvers file."""
