// GraphiQL from the gateway's own files. The UMD builds loaded before this script define
// the globals React, ReactDOM, GraphiQL and GraphiQLPluginExplorer. What differs per page
// (the endpoint, the development token, the example tabs) is the JSON of #page-data
// (app/graphql/ide.py), so this file is the same for everyone and cached for good.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("page-data").textContent);
  var url = new URL(config.url, window.location.href);
  var subscriptionUrl = new URL(url.href);
  subscriptionUrl.protocol = url.protocol === "https:" ? "wss:" : "ws:";

  // Queries and mutations are POSTed; subscriptions go over graphql-transport-ws, and
  // GraphiQL's fetcher sends the Headers tab as the connection_init payload, which is
  // where the gateway reads a websocket's token.
  // The gateway runs no @defer or @stream, so a query's answer is one JSON document.
  var fetchGraphQL = GraphiQL.createFetcher({
    url: url.href,
    subscriptionUrl: subscriptionUrl.href,
    enableIncrementalDelivery: false,
  });

  // The id the last createRequest returned, and who wants to hear of the next one.
  var createdId = null;
  var onCreated = new Set();

  // GraphiQL parses a tab's text a moment after it changes (its editor debounces), so
  // play pressed right after switching tabs can send the operation name, and pick the
  // transport, of the tab before: the gateway refuses a name the document lacks, as the
  // GraphQL-over-HTTP spec asks, and a subscription POSTed as a query. So the document is
  // parsed here again, and a document with one operation runs that one.
  function fetcher(params, options) {
    var ast;
    try {
      ast = GraphiQL.GraphQL.parse(params.query);
    } catch (error) {
      ast = null; // the gateway answers the syntax error
    }
    if (ast) {
      var operations = ast.definitions.filter(function (node) {
        return node.kind === "OperationDefinition";
      });
      if (operations.length === 1) {
        var name = operations[0].name ? operations[0].name.value : undefined;
        params = Object.assign({}, params, { operationName: name });
      }
      options = Object.assign({}, options, { documentAST: ast });
    }
    return fetchGraphQL(params, options).then(function (result) {
      var created = result && result.data && result.data.createRequest;
      if (created && created.id) {
        createdId = created.id;
        onCreated.forEach(function (listener) {
          listener(created.id);
        });
      }
      return result;
    });
  }

  // Fills in what a tab lacks when it is shown: the id of the request the Create tab
  // made, where its variables wait for it, and the page's headers (the development
  // token) where the headers are empty, as they are in tabs restored from the browser's
  // storage (GraphiQL keeps no headers there).
  function TabFiller() {
    var editor = GraphiQL.React.useEditorContext({ nonNull: true });
    var state = React.useState(createdId);
    var id = state[0];
    var setId = state[1];
    React.useEffect(function () {
      onCreated.add(setId);
      return function () {
        onCreated.delete(setId);
      };
    }, [setId]);
    React.useEffect(
      function () {
        var variables = editor.variableEditor;
        if (id && variables && variables.getValue().indexOf(config.createdId) >= 0) {
          variables.setValue(variables.getValue().split(config.createdId).join(id));
        }
        var headers = editor.headerEditor;
        if (config.headers && headers && !headers.getValue().trim()) {
          headers.setValue(config.headers);
        }
      },
      [id, editor.activeTabIndex, editor.variableEditor, editor.headerEditor],
    );
    return null;
  }

  var explorer = GraphiQLPluginExplorer.explorerPlugin();

  function App() {
    return React.createElement(
      GraphiQL,
      {
        fetcher: fetcher,
        defaultTabs: config.tabs,
        defaultHeaders: config.headers || undefined,
        plugins: [explorer],
        defaultEditorToolsVisibility: config.headers ? "headers" : true,
        isHeadersEditorEnabled: true,
        shouldPersistHeaders: false,
        inputValueDeprecation: true,
      },
      React.createElement(GraphiQL.Footer, null, React.createElement(TabFiller)),
    );
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(App));
})();
