"""The gateway's own browser pages: the files they load (assets.py) and how a page is
rendered and sent (pages.py). The pages themselves live with what they show (GraphiQL:
app/graphql/ide.py)."""
